"""TLS options built from rediss:// URLs for kombu and the Redis result backend."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr

from workers.app import create_app
from workers.settings import Settings
from workers.tls import tls_options


def test_plain_redis_has_no_tls() -> None:
    assert tls_options("redis://localhost:6379/0") is None


def test_rediss_verifies_certificates_by_default() -> None:
    # kombu alone would connect with CERT_NONE here.
    assert tls_options("rediss://:pw@redis.example:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


@pytest.mark.parametrize("value,expected", [("required", ssl.CERT_REQUIRED),
                                            ("CERT_OPTIONAL", ssl.CERT_OPTIONAL), ("none", ssl.CERT_NONE)])
def test_cert_reqs_and_files_come_from_the_url(value: str, expected: ssl.VerifyMode) -> None:
    url = (f"rediss://h:6380/0?ssl_cert_reqs={value}&ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem"
           "&ssl_keyfile=/c.key")
    assert tls_options(url) == {"ssl_cert_reqs": expected, "ssl_ca_certs": "/ca.pem",
                                "ssl_certfile": "/c.pem", "ssl_keyfile": "/c.key"}


def test_unknown_cert_reqs_is_refused() -> None:
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        tls_options("rediss://h/0?ssl_cert_reqs=maybe")


def test_app_passes_tls_to_broker_and_backend_and_hides_the_password() -> None:
    url = "rediss://:s3cret@redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem"
    app = create_app(Settings(broker_url=SecretStr(url)))
    try:
        conn = app.connection_for_write()
        assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}
        assert "s3cret" not in conn.as_uri()
        params = app.backend.connparams
        assert params["ssl_cert_reqs"] == ssl.CERT_REQUIRED and params["ssl_ca_certs"] == "/ca.pem"
        assert params["connection_class"].__name__ == "SSLConnection"
        assert "s3cret" not in repr(Settings(broker_url=SecretStr(url)))
    finally:
        app.close()
