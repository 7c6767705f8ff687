"""TLS options for `rediss://` URLs, for kombu (broker) and Celery's Redis backend.

kombu connects to a `rediss://` broker with certificate checks *off* unless
`broker_use_ssl` says otherwise, so we always say: verification is required
unless the URL asks for less (`?ssl_cert_reqs=none|optional`). A CA bundle and a
client certificate come from the URL too (`ssl_ca_certs`, `ssl_certfile`,
`ssl_keyfile`), the same query parameters redis-py reads.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def tls_options(url: str) -> dict[str, Any] | None:
    """The ssl options for a rediss:// URL; None for a plain redis:// one."""
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    reqs = query.get("ssl_cert_reqs", "required").lower().removeprefix("cert_")
    if reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs={reqs!r} in the Redis URL: use one of {sorted(CERT_REQS)}")
    options: dict[str, Any] = {"ssl_cert_reqs": CERT_REQS[reqs]}
    options.update({key: query[key] for key in FILES if key in query})
    return options
