"""`modelfleet up` as a user runs it: a real platform, a submit from another process, Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.local import RedisServer, wait_for
from tests.conftest import EXAMPLE_DATA, REPO, write_spec

pytestmark = pytest.mark.integration


def _descendants(root: int) -> set[int]:
    """Every live process below `root`, from /proc (children of children included)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces and parentheses: split after the last ')'.
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie has already exited; it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _mentioning(needle: str) -> list[int]:
    """Live processes whose command line or environment contains `needle`."""
    hits = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle.encode() in blob and _alive(int(entry.name)):
            hits.append(int(entry.name))
    return hits


class Output:
    """The lines a process prints, read on a thread so the test can wait on them."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self._queue.put(line) for line in stream], daemon=True).start()

    def text(self) -> str:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.search(pattern, self.text(), re.MULTILINE)
            if match:
                found.append(match)
            return match is not None

        wait_for(seen, timeout, f"output matching {pattern!r}; got:\n{self.text()}", interval=0.2)
        return found[0]


@contextlib.contextmanager
def start_up(tmp_path: Path, workers: int, **extra_env: str
             ) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """`python -m producer up --workers K` in its own session; killed (tree too) if it outlives us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env.update(MODELFLEET_LOCAL_REDIS_DIR=str(tmp_path / "redis"),
               MODELFLEET_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
               MODELFLEET_DATA_ROOT=str(EXAMPLE_DATA), **extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "producer", "up", "--workers", str(workers)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        yield proc, Output(proc)
    finally:
        if proc.poll() is None:
            tree = _descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            proc.wait(10)


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
    started = _descendants(proc.pid)
    assert len(started) >= 4, started  # redis-server, 2 workers (+ pool children), flower
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0, out.text()
    assert "stopped" in out.text()
    wait_for(lambda: not any(_alive(pid) for pid in started), 30, "children of up to exit")
    port = broker_url.rsplit(":", 1)[1].split("/")[0]
    assert _mentioning(broker_url) == [] and _mentioning(f"127.0.0.1:{port}") == []


def test_up_uses_a_configured_broker_and_never_prints_its_password(tmp_path: Path) -> None:
    password = secrets.token_hex(12)
    with RedisServer(tmp_path / "own-redis", password=password) as server, \
            start_up(tmp_path, 1, MODELFLEET_BROKER_URL=server.url) as (proc, out):
        out.wait_for(r"^up \(pid \d+\)", 180)
        started = _descendants(proc.pid)
        # No embedded Redis of its own: the configured one is used ...
        assert not any("redis-server" in _cmdline(pid) for pid in started)
        assert f"127.0.0.1:{server.port}" in out.text() and "(from MODELFLEET_BROKER_URL)" in out.text()
        # ... and its password is masked.
        assert password not in out.text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, out.text()
        wait_for(lambda: not any(_alive(pid) for pid in started), 30, "children of up to exit")
        # A broker that up did not start, up does not stop.
        assert server.proc is not None and server.proc.poll() is None
