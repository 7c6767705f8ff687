"""rediss:// through real TLS (a terminating proxy: the bundled redis-server has no TLS)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis

from producer.local import LocalWorkers, RedisServer
from producer.submit import BrokerUnavailable, check_broker, submit
from tests.conftest import EXAMPLE_DATA, close_app, load
from tests.support.cluster import classifier
from tests.support.tls import TlsProxy, make_certs
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _settings(proxy: TlsProxy, password: str, ca: Path, tmp: Path) -> Settings:
    url = f"rediss://:{password}@127.0.0.1:{proxy.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    return Settings(broker_url=url, artifact_root=tmp / "artifacts",  # type: ignore[arg-type]
                    data_root=EXAMPLE_DATA, lease_ttl=3.0)


def test_batch_runs_over_rediss_with_a_verified_certificate(tmp_path: Path) -> None:
    ca, cert, key = make_certs(tmp_path / "certs")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer(tmp_path / "redis", password="tls-pw"))
        proxy = stack.enter_context(TlsProxy(server.port, cert, key))
        settings = _settings(proxy, "tls-pw", ca, tmp_path)
        stack.enter_context(LocalWorkers(settings, 1, tmp_path / "logs"))
        app = create_app(settings)
        stack.callback(close_app, app)
        runtime = Runtime.from_settings(settings)
        spec = {"name": "tls", "models": [classifier("t1"), classifier("t2", max_depth=2)]}
        handle = submit(load(tmp_path, spec, settings), app, runtime)
        status = handle.wait(timeout=120)

        assert status.counts == {"promoted": 2}
        assert proxy.handshakes >= 3, "producer, worker and backend all came in over TLS"


def test_rediss_refuses_a_certificate_from_an_unknown_ca(tmp_path: Path) -> None:
    _, cert, key = make_certs(tmp_path / "certs")
    stranger, _, _ = make_certs(tmp_path / "other", name="stranger")
    with RedisServer(tmp_path / "redis") as server, TlsProxy(server.port, cert, key) as proxy:
        settings = _settings(proxy, "", stranger, tmp_path).model_copy(
            update={"broker_connect_timeout": 2.0})
        app = create_app(settings)
        try:
            with pytest.raises(BrokerUnavailable, match="certificate verify failed"):
                check_broker(app, timeout=2.0)
        finally:
            app.close()
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
            Runtime.from_settings(settings).redis.ping()
