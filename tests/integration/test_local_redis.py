"""The embedded Redis of local commands (issue 10, points 4-6), with real processes:
`modelfleet run` / `status` / `cancel` subprocesses, a real redis-server and real workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.local import EmbeddedRedis, serves_directory, wait_for
from tests.conftest import EXAMPLE_DATA, REPO, write_spec
from tests.support.processes import Output, alive, cli_process, cmdline, descendants, local_workers, start_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env.update(MODELFLEET_LOCAL_REDIS_DIR=str(tmp_path / "mf" / "redis"),
               MODELFLEET_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
               MODELFLEET_DATA_ROOT=str(EXAMPLE_DATA),
               MODELFLEET_ALLOWED_ESTIMATOR_PREFIXES='["sklearn.", "tests.support."]')
    return env


def _redis_servers(data_dir: Path) -> list[int]:
    """Live redis-server processes serving `data_dir`."""
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and serves_directory(int(p.name), data_dir)]


def _blocking_spec(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """One model whose fit announces itself in `started` and blocks until `release` exists."""
    started, release = tmp_path / f"{name}.started", tmp_path / f"{name}.release"
    spec = write_spec(tmp_path, {"name": name, "models": [
        {"name": f"{name}-held", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
         "estimator": {"class_path": "tests.support.estimators.FaultyClassifier",
                       "params": {"started": str(started), "wait_for": str(release)}}}]},
        name=f"{name}.yaml")
    return spec, started, release


@contextlib.contextmanager
def start_run(tmp_path: Path, spec: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """`python -m producer run SPEC -w 1` in its own session; its tree is killed if it outlives us."""
    with cli_process([sys.executable, "-m", "producer", "run", str(spec), "-w", "1", "--timeout", "240",
                      *args], REPO, _env(tmp_path)) as started:
        yield started


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer", *args], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)


def _address(data_dir: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(data_dir.with_name(f"{data_dir.name}.address").read_text())
    return found


def _listens_on_loopback_only(port: int) -> bool:
    """Every listening socket on `port` is bound to 127.0.0.1 (from /proc/net/tcp, tcp6)."""
    local = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                addr, hexport = fields[1].rsplit(":", 1)
                if int(hexport, 16) == port and fields[3] == "0A":  # LISTEN
                    local.append(addr)
    return bool(local) and all(addr == "0100007F" for addr in local)


def test_embedded_redis_has_a_password_no_config_and_is_shared_by_a_second_command(tmp_path: Path) -> None:
    """Point 4 (password file 0600, NOAUTH, CONFIG/DEBUG/MODULE gone, loopback) and point 5
    (`status` and `cancel` from a second shell use run's Redis; no second redis-server)."""
    data_dir = tmp_path / "mf" / "redis"
    spec, started, release = _blocking_spec(tmp_path, "lockdown")
    with start_run(tmp_path, spec) as (proc, out):
        wait_for(started.exists, 180, f"the held fit to start; run said:\n{out.text()}")
        servers = _redis_servers(data_dir)
        assert len(servers) == 1, servers
        address = _address(data_dir)
        assert address["pid"] == servers[0] and address["host"] == "127.0.0.1"
        port = int(address["port"])

        # Point 4: a generated password, in a 0600 file next to the data directory ...
        password_file = data_dir.with_name("redis.password")
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        assert len(password) >= 32
        assert password not in cmdline(servers[0])  # not on the command line (`ps`)
        # ... a client without it is refused ...
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"SET x 1\r\n")
            assert raw.recv(200).startswith(b"-NOAUTH"), "a client without the password got in"
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).ping()
        # ... and even with it, CONFIG (SET dir + SAVE writes files anywhere), DEBUG, MODULE are gone.
        client = redis.Redis(port=port, password=password, socket_timeout=5)
        assert client.ping()
        for command in (["CONFIG", "SET", "dir", str(tmp_path)], ["CONFIG", "GET", "dir"],
                        ["DEBUG", "SLEEP", "0"], ["MODULE", "LIST"]):
            with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
                client.execute_command(*command)
        assert _listens_on_loopback_only(port)

        # Point 5: a second command finds run's Redis (same server, same records) ...
        asked = time.monotonic()
        listed = _cli(tmp_path, "batches", "--json")
        print(f"a second command (batches) answered in {time.monotonic() - asked:.2f}s")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        batch_id = json.loads(listed.stdout)[0]["batch_id"]
        shown = _cli(tmp_path, "status", batch_id, "--json")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert json.loads(shown.stdout)["counts"].get("promoted", 0) == 0, shown.stdout
        # ... and starts no second redis-server on the directory.
        assert _redis_servers(data_dir) == servers
        assert _address(data_dir)["port"] == port

        # The batch still runs end to end (workers use the password from their environment).
        release.touch()
        assert proc.wait(180) == 0, out.text()
    assert "1 promoted" in out.text(), out.text()
    # run stopped the server it started, and removed its address file.
    wait_for(lambda: not _redis_servers(data_dir), 20, "run's redis-server to exit")
    assert not data_dir.with_name("redis.address").exists()


def test_the_last_command_to_leave_stops_the_embedded_redis_not_the_first(tmp_path: Path) -> None:
    """Issue 19: the `run` that started the embedded Redis stopped it when it exited, under a
    second `run` still using it. Now the owner hands it on, and the last one out stops it."""
    data_dir = tmp_path / "mf" / "redis"
    first_spec, first_started, first_release = _blocking_spec(tmp_path, "first")
    second_spec, second_started, second_release = _blocking_spec(tmp_path, "second")
    with start_run(tmp_path, first_spec) as (first, first_out):
        wait_for(first_started.exists, 180, f"the first fit to start; run said:\n{first_out.text()}")
        servers = _redis_servers(data_dir)
        assert len(servers) == 1, servers
        # Given a second `run` on the same data directory: a guest of the first one's Redis
        with start_run(tmp_path, second_spec) as (second, second_out):
            wait_for(second_started.exists, 180, f"the second fit to start; run said:\n{second_out.text()}")
            assert _redis_servers(data_dir) == servers
            # When the first `run` (the owner) finishes and exits
            first_release.touch()
            assert first.wait(180) == 0, first_out.text()
            # Then the server lives on for the second, which finishes its batch on it
            assert _redis_servers(data_dir) == servers and _address(data_dir)["pid"] == servers[0]
            second_release.touch()
            assert second.wait(180) == 0, second_out.text()
        assert "1 promoted" in second_out.text(), second_out.text()
    # And the last one out stopped it, and removed its address file
    wait_for(lambda: not _redis_servers(data_dir), 20, "the redis-server to exit")
    assert not data_dir.with_name("redis.address").exists()


def test_cancel_from_a_second_shell_uses_runs_redis(tmp_path: Path) -> None:
    """Point 5 as the issue saw it: `cancel` while `run` runs acts on run's batch (before: a second
    redis-server on the same AOF; the cancel was lost and the batch finished deployed)."""
    data_dir = tmp_path / "mf" / "redis"
    spec, started, release = _blocking_spec(tmp_path, "cancelme")
    with start_run(tmp_path, spec) as (proc, out):
        wait_for(started.exists, 180, f"the held fit to start; run said:\n{out.text()}")
        servers = _redis_servers(data_dir)
        batch_id = json.loads(_cli(tmp_path, "batches", "--json").stdout)[0]["batch_id"]
        cancelled = _cli(tmp_path, "cancel", batch_id, "--json")
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert json.loads(cancelled.stdout)["stopping"] == ["cancelme-held"]
        assert _redis_servers(data_dir) == servers
        release.touch()
        # The running model stops after its stage: the batch ends with it cancelled, run exits 1.
        assert proc.wait(180) == 1, out.text()
    assert "did not deploy" in out.text(), out.text()


def test_commands_from_another_shell_use_ups_redis_without_a_broker_url(tmp_path: Path) -> None:
    """Point 5 with `up`: `submit --wait` and `status` with no MODELFLEET_BROKER_URL, in the same
    data directory, find up's Redis (its password from the 0600 file) and start no second one."""
    data_dir = tmp_path / "redis"
    with start_up(tmp_path, 1) as (proc, out):
        url = out.wait_for(r"^broker\s+(redis://\S+)$", 180).group(1)
        out.wait_for(r"^up \(pid \d+\)", 60)
        password = data_dir.with_name("redis.password").read_text().strip()
        assert f":{password}@127.0.0.1:" in url  # the printed URL carries the generated password
        servers = _redis_servers(data_dir)
        assert len(servers) == 1, servers
        spec = write_spec(tmp_path, {"name": "via-up", "models": [
            {"name": "via-up-iris", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
             "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                           "params": {"max_depth": 2}}}]})
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
        env.update(MODELFLEET_LOCAL_REDIS_DIR=str(data_dir), MODELFLEET_DATA_ROOT=str(EXAMPLE_DATA),
                   MODELFLEET_ARTIFACT_ROOT=str(tmp_path / "artifacts"))
        submitted = subprocess.run([sys.executable, "-m", "producer", "submit", str(spec), "--wait",
                                    "--timeout", "120"], cwd=REPO, env=env, capture_output=True,
                                   text=True, timeout=180)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        batch_id = submitted.stdout.split("submitted batch ", 1)[1].split()[0]
        shown = subprocess.run([sys.executable, "-m", "producer", "status", batch_id, "--json"], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert json.loads(shown.stdout)["counts"] == {"promoted": 1}
        assert _redis_servers(data_dir) == servers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, out.text()
    assert not _redis_servers(data_dir)


def test_stale_address_file_is_replaced_and_a_live_server_is_shared(tmp_path: Path) -> None:
    """Point 5: the lock and address files. A dead server's files are replaced; a live one is
    reused (guest), never a second server; an owner's stop removes its address file."""
    data_dir = tmp_path / "mf" / "redis"
    data_dir.parent.mkdir(parents=True)
    address_file = data_dir.with_name("redis.address")
    # A stale address file: a port nobody listens on and a pid that is not running.
    address_file.write_text(json.dumps({"host": "127.0.0.1", "port": 1, "pid": 2 ** 22 + 7, "owner": 1}))
    with EmbeddedRedis(data_dir) as first:
        assert first.owner and first.port != 1
        assert _address(data_dir)["port"] == first.port
        with EmbeddedRedis(data_dir) as second:
            assert not second.owner and (second.port, second.pid) == (first.port, first.pid)
            assert _redis_servers(data_dir) == [first.pid]
            redis.Redis.from_url(second.url).set("seen", "1")
        # A guest leaving stops nothing.
        assert redis.Redis.from_url(first.url).get("seen") == b"1"
    assert not address_file.exists() and not _redis_servers(data_dir)


def test_run_stopped_with_sigterm_stops_its_redis_and_workers(tmp_path: Path) -> None:
    """Point 6: SIGTERM mid-batch (timeout, CI cancellation, kill) stops what run started."""
    data_dir = tmp_path / "mf" / "redis"
    spec, started, _release = _blocking_spec(tmp_path, "sigterm")
    with start_run(tmp_path, spec) as (proc, out):
        wait_for(started.exists, 180, f"the held fit to start; run said:\n{out.text()}")
        tree = descendants(proc.pid)
        servers = _redis_servers(data_dir)
        assert len(servers) == 1 and servers[0] in tree
        assert local_workers(tree), [cmdline(p) for p in tree]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM, out.text()
        print(f"run exited {time.monotonic() - sent:.2f}s after SIGTERM")
        assert "interrupted (SIGTERM)" in out.text()
        survivors = [pid for pid in tree if alive(pid)]
        assert survivors == [], [(pid, cmdline(pid)) for pid in survivors]
        assert not _redis_servers(data_dir)


def test_run_notices_when_every_worker_it_started_died(tmp_path: Path) -> None:
    """Point 6: all of run's workers die mid-batch; run stops waiting, says so, exits 1."""
    data_dir = tmp_path / "mf" / "redis"
    spec, started, _release = _blocking_spec(tmp_path, "orphan")
    with start_run(tmp_path, spec) as (proc, out):
        wait_for(started.exists, 180, f"the held fit to start; run said:\n{out.text()}")
        tree = descendants(proc.pid)
        workers = local_workers(tree)
        assert workers, [cmdline(p) for p in tree]
        killed = time.monotonic()
        for pid in workers:
            os.killpg(pid, signal.SIGKILL)
        assert proc.wait(60) == 1, out.text()
        print(f"run exited {time.monotonic() - killed:.2f}s after its last worker died")
        assert "local worker(s) exited" in out.text() and "stopped waiting" in out.text(), out.text()
        assert not [pid for pid in tree if alive(pid)]
        assert not _redis_servers(data_dir)
