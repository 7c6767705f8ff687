"""sentinel:// URLs: settings, kombu/Celery transport options and our own redis-py client (no servers)."""

from __future__ import annotations

import pytest
from celery.backends.redis import SentinelBackend
from pydantic import SecretStr, ValidationError
from redis.sentinel import SentinelConnectionPool

from producer.submit import masked_url
from workers.app import create_app
from workers.connections import is_sentinel, redis_client
from workers.settings import Settings

URL = "sentinel://:master%40pw@s1.example:26379/2;sentinel://:master%40pw@s2.example:26380/2;sentinel://s3.example"


def sentinel_settings(**extra: object) -> Settings:
    return Settings(broker_url=SecretStr(URL), sentinel_master="mymaster",
                    sentinel_password=SecretStr("sentinel-pw"), **extra)  # type: ignore[arg-type]


def test_a_sentinel_url_without_a_master_name_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="MODELFLEET_SENTINEL_MASTER"):
        Settings(broker_url=SecretStr(URL))
    with pytest.raises(ValidationError, match="MODELFLEET_RESULT_BACKEND is a sentinel"):
        Settings(broker_url=SecretStr("redis://h/0"), result_backend=SecretStr(URL))


def test_only_sentinel_urls_are_sentinel() -> None:
    assert is_sentinel(URL) and is_sentinel(" sentinel://h:26379")
    assert not is_sentinel("redis://h:6379/0") and not is_sentinel("rediss://h/0")


def test_broker_and_backend_get_the_master_name_and_the_sentinels_password() -> None:
    app = create_app(sentinel_settings(broker_connect_timeout=3.0))
    for options in (app.conf.broker_transport_options, app.conf.result_backend_transport_options):
        assert options["master_name"] == "mymaster"
        assert options["sentinel_kwargs"] == {"password": "sentinel-pw", "socket_connect_timeout": 3.0,
                                              "socket_timeout": 3.0}
    assert app.conf.broker_transport_options["visibility_timeout"] == 3600
    assert isinstance(app.backend, SentinelBackend)
    assert app.conf.broker_use_ssl is None


def test_plain_urls_get_no_sentinel_options() -> None:
    app = create_app(Settings(broker_url=SecretStr("redis://h:6379/0")))
    assert "master_name" not in app.conf.broker_transport_options
    assert "master_name" not in app.conf.result_backend_transport_options


def test_our_client_asks_every_sentinel_for_the_master_with_the_urls_password_and_db() -> None:
    client = redis_client(sentinel_settings(), URL, decode_responses=True)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
    assert pool.connection_kwargs["password"] == "master@pw" and pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["decode_responses"] is True
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [
        ("s1.example", 26379), ("s2.example", 26380), ("s3.example", 26379)]
    assert {s["password"] for s in sentinels} == {"sentinel-pw"}


def test_every_password_of_a_sentinel_url_is_masked() -> None:
    shown = masked_url(URL)
    assert "master%40pw" not in shown and shown.count(":**@") == 2 and "s3.example" in shown
