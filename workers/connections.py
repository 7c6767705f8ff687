"""Redis connections from a URL: one server (`redis://`, `rediss://`) or a Sentinel-watched master.

`sentinel://[:PASSWORD@]HOST:PORT[/DB];sentinel://[:PASSWORD@]HOST2:PORT[/DB];...` lists
the sentinels, in the format kombu (broker) and Celery (result backend) read; the
password and db of the first one are the *master's*, as both of them read it. The
master's name and the sentinels' own password come from settings. Every client
(kombu, Celery's backend, our own) asks the sentinels for the master on each new
connection, so after a failover it reconnects to the promoted replica.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from workers.settings import Settings

SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379


def is_sentinel(url: str) -> bool:
    return urlsplit(url.split(";", 1)[0].strip()).scheme == SCHEME


def sentinel_options(settings: Settings, url: str) -> dict[str, Any]:
    """Transport options naming the master and reaching the sentinels; {} for a plain URL.

    For kombu's `broker_transport_options` and Celery's `result_backend_transport_options`.
    """
    if not is_sentinel(url):
        return {}
    if settings.sentinel_master is None:  # Settings refuses this already; a copy may not
        raise ValueError("a sentinel:// URL needs MODELFLEET_SENTINEL_MASTER (the master's name)")
    return {"master_name": settings.sentinel_master, "sentinel_kwargs": _sentinel_kwargs(settings)}


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    # Given explicitly, redis-py copies no socket timeouts to the sentinel connections:
    # without them one hung sentinel would stall every master lookup.
    kwargs: dict[str, Any] = {"socket_connect_timeout": settings.broker_connect_timeout,
                              "socket_timeout": settings.broker_connect_timeout}
    if settings.sentinel_password is not None:
        kwargs["password"] = settings.sentinel_password.get_secret_value()
    return kwargs


def redis_client(settings: Settings, url: str, **kwargs: Any) -> redis.Redis:
    """A redis-py client for `url`; for a sentinel URL, one that always talks to the current master."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **kwargs)
    options = sentinel_options(settings, url)
    nodes = [urlsplit(one.strip()) for one in url.split(";") if one.strip()]
    first = nodes[0]
    db = int(first.path.strip("/") or 0)
    master = {"db": db, "username": unquote(first.username) if first.username else None,
              "password": unquote(first.password) if first.password else None}
    sentinels = Sentinel([(n.hostname or "127.0.0.1", n.port or DEFAULT_SENTINEL_PORT) for n in nodes],
                         sentinel_kwargs=options["sentinel_kwargs"])
    return sentinels.master_for(options["master_name"], **master, **kwargs)
