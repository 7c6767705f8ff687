"""The broker URL in error messages: as given, its password masked only when it has one."""

from __future__ import annotations

import pytest

from bench.teardown import close_app
from producer.local import free_port
from producer.submit import BrokerUnavailable, check_broker, masked_url
from workers.app import create_app
from workers.settings import Settings


@pytest.mark.parametrize("given,shown", [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://redis:6379", "redis://redis:6379"),
    ("redis://user@host:6379/0", "redis://user@host:6379/0"),
    ("redis://:@host:6379/0", "redis://:@host:6379/0"),  # empty password: none
    ("redis://:s3cret@host:6379/0", "redis://:**@host:6379/0"),
    ("redis://user:s3cret@host:6379/0", "redis://user:**@host:6379/0"),
    ("rediss://:s3cret@host:6380/0?ssl_cert_reqs=required",
     "rediss://:**@host:6380/0?ssl_cert_reqs=required"),
    ("redis://:a@h1:1/0;redis://h2:2/0", "redis://:**@h1:1/0;redis://h2:2/0"),
])
def test_masked_url_masks_a_password_and_nothing_else(given: str, shown: str) -> None:
    assert masked_url(given) == shown


@pytest.mark.parametrize("password", [None, "s3cret-pw"])
def test_unreachable_broker_message_shows_the_url_as_given(password: str | None) -> None:
    port = free_port()  # nothing listens here: refused at once
    auth = f":{password}@" if password else ""
    app = create_app(Settings(broker_url=f"redis://{auth}127.0.0.1:{port}/0"))  # type: ignore[arg-type]
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            check_broker(app, timeout=1.0)
    finally:
        close_app(app)
    message = str(caught.value)
    if password:
        assert f"cannot reach the broker at redis://:**@127.0.0.1:{port}/0:" in message
        assert password not in message
    else:  # before: redis://:**@127.0.0.1:PORT/0, as if a password were set
        assert f"cannot reach the broker at redis://127.0.0.1:{port}/0:" in message
        assert "**" not in message
