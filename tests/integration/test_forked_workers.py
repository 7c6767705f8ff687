"""Local workers forked from the fork server (workers/forked.py) are what `python -m workers
worker` would be: their own session, the caller's folder, only the environment given, their
output in their log, and their exit as Popen would report it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from producer.local import LocalWorkers, WorkersGone, stop_process, worker_env
from tests.conftest import REPO
from tests.support.processes import alive, cmdline, parent_of
from workers.code_versions import versions_file
from workers.forked import ForkedWorker, group_alive
from workers.settings import Settings

pytestmark = pytest.mark.integration


def test_a_forked_worker_runs_in_its_own_session_in_the_callers_folder_and_dies_like_a_process(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the caller in a folder of its own, and a relative check cache (read in the worker's folder)
    monkeypatch.chdir(tmp_path)
    own = settings.model_copy(update={"check_cache_dir": Path("checks-here")})
    with LocalWorkers(own, 1, tmp_path / "logs", name_prefix="forked") as pool:
        proc = pool.procs[0]
        # Then it was forked by the fork server, and leads its own process group
        assert isinstance(proc, ForkedWorker)
        assert "-m workers.forkserver" in cmdline(parent_of(proc.pid))
        assert os.getpgid(proc.pid) == proc.pid and proc.poll() is None
        # and it read its settings and its folder: its start files are in the caller's folder
        assert versions_file(tmp_path / "checks-here").exists()
        assert "forked0@" in (tmp_path / "logs" / "forked0.log").read_text()
        # When its process group is killed
        os.killpg(proc.pid, signal.SIGKILL)
        # Then its exit is reported as Popen reports one, and the pool knows all its workers died
        assert proc.wait(30) == -signal.SIGKILL and proc.returncode == -signal.SIGKILL
        with pytest.raises(WorkersGone, match="exit codes -9"):
            pool.check_alive()


def test_a_forked_worker_with_a_bad_setting_writes_one_line_and_exits_2(settings: Settings,
                                                                        tmp_path: Path) -> None:
    # Given a setting that is invalid only in the environment this worker is given
    env = {**worker_env(settings), "MODELFLEET_MODEL_CACHE_SIZE": "-1"}
    log = tmp_path / "bad.log"
    # When it is forked
    proc = ForkedWorker(["worker", "-n", "bad@here"], env, log)
    # Then it exits 2 with the launcher's one line, in its log
    assert proc.wait(60) == 2
    assert log.read_text().strip().splitlines() == [
        "error: invalid MODELFLEET_* environment: MODELFLEET_MODEL_CACHE_SIZE: Input should be "
        "greater than or equal to 0"]


def test_the_fork_server_imports_what_a_worker_needs_and_nothing_of_the_caller() -> None:
    needed = ("sklearn.ensemble", "pandas", "skops.io", "celery.bin.celery", "workers.stages",
              "workers.scoring", "workers.warm", "workers.slots")
    check = ("import sys, threading, workers.forkserver_preload; "
             f"print(sorted(m for m in {needed!r} if m not in sys.modules)); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('producer', 'flower', 'tornado'))); "
             "print(threading.active_count())")
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    # Then nothing a worker imports is missing, nothing of the producer or Flower is there,
    # and no thread runs (a fork copies only the thread that forks)
    assert done.stdout.split("\n")[:3] == ["[]", "[]", "1"], done.stdout + done.stderr


def test_workers_whose_fork_server_died_are_still_stopped_and_a_new_server_forks_the_next(
        settings: Settings, tmp_path: Path) -> None:
    # Given a running forked worker, and its fork server killed under it
    with LocalWorkers(settings, 1, tmp_path / "a", name_prefix="orphan") as pool:
        proc = pool.procs[0]
        assert isinstance(proc, ForkedWorker)
        dead = proc.server
        dead.proc.kill()
        dead.proc.wait(30)
        # Then the worker lives on, and the pool still stops it (it is looked at, not told)
        assert proc.poll() is None and alive(proc.pid)
        pool.stop()
        assert not alive(proc.pid) and proc.poll() is not None
    # and the next worker is forked by a new server
    with LocalWorkers(settings, 1, tmp_path / "b", name_prefix="next") as pool:
        proc = pool.procs[0]
        assert isinstance(proc, ForkedWorker) and proc.server is not dead and proc.poll() is None


def test_the_fork_server_refuses_arguments_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "workers.forkserver", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("usage: python -m workers.forkserver") and done.stdout == ""


def test_a_pool_told_not_to_fork_runs_its_command(settings: Settings, tmp_path: Path) -> None:
    class Spawned(LocalWorkers):
        forked = False

    with Spawned(settings, 1, tmp_path, name_prefix="spawned") as pool:
        assert isinstance(pool.procs[0], subprocess.Popen)
        assert "-m workers worker" in cmdline(pool.procs[0].pid)


# A group leader that exits at SIGTERM, and a child of its group that takes `delay` seconds
# to finish after it (as a pool child uploading its journal), or ignores SIGTERM ("never").
_GROUP = """
import os, signal, subprocess, sys, time
mark, delay = sys.argv[1], sys.argv[2]
child = '''
import signal, sys, time
def done(*_):
    time.sleep(float(sys.argv[2]))
    open(sys.argv[1], "w").write("finished")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[2] == "never" else done)
print("ready", flush=True)
time.sleep(120)
'''
proc = subprocess.Popen([sys.executable, "-c", child, mark, delay], stdout=subprocess.PIPE)
proc.stdout.readline()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("delay", ["1.0", "never"])
def test_a_process_is_stopped_when_its_whole_group_has_ended(tmp_path: Path, delay: str) -> None:
    """stop_process returns once every process of the group has ended: a child finishing its
    exit after the leader's is waited for; one that outlives the grace period is SIGKILLed."""
    mark = tmp_path / "finished"
    leader = subprocess.Popen([sys.executable, "-c", _GROUP, str(mark), delay], stdout=subprocess.PIPE,
                              start_new_session=True)
    assert leader.stdout is not None
    with leader.stdout:  # closed here, not left to the garbage collector's ResourceWarning
        assert leader.stdout.readline() == b"ready\n"
        assert group_alive(leader.pid)
        stop_process(leader, grace=3.0)
    assert leader.returncode is not None and not group_alive(leader.pid)
    assert mark.exists() == (delay != "never")  # the slow child finished its exit first
