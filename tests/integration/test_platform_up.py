"""`modelfleet up` as a user runs it: a real platform, a submit from another process, Ctrl-C."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.local import RedisServer, wait_for
from tests.conftest import REPO, write_spec
from tests.support.processes import Output, alive, cmdline, descendants, mentioning, start_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    with start_up(tmp_path, 2) as started:
        yield started


def test_up_serves_submit_from_another_shell_and_stops_on_ctrl_c(
        tmp_path: Path, up_process: tuple[subprocess.Popen[str], Output]) -> None:
    proc, out = up_process
    broker_url = out.wait_for(r"^broker\s+(redis://\S+)$", 180).group(1)
    flower = out.wait_for(r"^flower\s+(http://\S+?)/\s+user (\S+)$", 60)
    out.wait_for(r"^up \(pid \d+\)", 30)
    assert f"export MODELFLEET_BROKER_URL={broker_url}" in out.text()
    # Flower is up and refuses the API without credentials.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{flower.group(1)}/api/workers", timeout=10)
    assert refused.value.code == 401

    # Given the platform, when another shell submits with only the printed broker URL ...
    spec = write_spec(tmp_path, {"name": "up-smoke", "models": [
        {"name": f"up-{d}", "task": "classification", "dataset": {"kind": "sklearn", "name": d},
         "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                       "params": {"max_depth": 3}}} for d in ("iris", "wine")]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env["MODELFLEET_BROKER_URL"] = broker_url
    result = subprocess.run([sys.executable, "-m", "producer", "submit", str(spec), "--wait",
                             "--timeout", "180"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=240)
    # ... the batch deploys on up's workers.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted batch up-smoke-" in result.stdout
    assert (tmp_path / "artifacts").is_dir() and any((tmp_path / "artifacts").rglob("*"))

    # When Ctrl-C reaches `up`, it exits and stops everything it started.
    started = descendants(proc.pid)
    assert len(started) >= 4, started  # redis-server, 2 workers (+ pool children), flower
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0, out.text()
    assert "stopped" in out.text()
    wait_for(lambda: not any(alive(pid) for pid in started), 30, "children of up to exit")
    port = broker_url.rsplit(":", 1)[1].split("/")[0]
    assert mentioning(broker_url) == [] and mentioning(f"127.0.0.1:{port}") == []


def test_up_uses_a_configured_broker_and_never_prints_its_password(tmp_path: Path) -> None:
    password = secrets.token_hex(12)
    with RedisServer(tmp_path / "own-redis", password=password) as server, \
            start_up(tmp_path, 1, MODELFLEET_BROKER_URL=server.url, MODELFLEET_PAGE_PORT="0") as (proc, out):
        out.wait_for(r"^up \(pid \d+\)", 180)
        assert "\nbatches " not in out.text()  # MODELFLEET_PAGE_PORT=0: no batch page
        started = descendants(proc.pid)
        # No embedded Redis of its own: the configured one is used ...
        assert not any("redis-server" in cmdline(pid) for pid in started)
        assert f"127.0.0.1:{server.port}" in out.text() and "(from MODELFLEET_BROKER_URL)" in out.text()
        # ... and its password is masked.
        assert password not in out.text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, out.text()
        wait_for(lambda: not any(alive(pid) for pid in started), 30, "children of up to exit")
        # A broker that up did not start, up does not stop.
        assert server.proc is not None and server.proc.poll() is None
