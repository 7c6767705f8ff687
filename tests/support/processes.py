"""Command-line processes in tests: their output, their process trees, and a sure stop."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from producer.local import wait_for
from tests.conftest import EXAMPLE_DATA
from workers.forked import pid_alive as alive  # a zombie has already exited
from workers.settings import Settings


def descendants(root: int) -> set[int]:
    """Every live process below `root`, from /proc (children of children included)."""
    parents = {int(entry.name): parent_of(int(entry.name))
               for entry in Path("/proc").iterdir() if entry.name.isdigit()}
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def local_workers(tree: set[int]) -> list[int]:
    """The workers among `tree`: `python -m workers worker` processes, or those forked from
    the local fork server (workers/forked.py), each the leader of its own process group."""
    servers = {pid for pid in tree if "-m workers.forkserver" in cmdline(pid)}
    return [pid for pid in tree if _leads_its_group(pid)
            and ("-m workers worker" in cmdline(pid) or parent_of(pid) in servers)]


def _leads_its_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def parent_of(pid: int) -> int:
    """Its parent's PID from /proc (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name may hold spaces and parentheses: split after the last ')'.
    return int(stat[stat.rindex(")") + 2:].split()[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def mentioning(needle: str) -> list[int]:
    """Live processes whose command line or environment contains `needle`."""
    hits = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle.encode() in blob and alive(int(entry.name)):
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
def cli_process(args: Sequence[str], cwd: Path, env: dict[str, str]
                ) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """A command in its own session, its output read as it comes; killed (tree too) if it outlives us."""
    proc = subprocess.Popen(list(args), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        yield proc, Output(proc)
    finally:
        if proc.poll() is None:
            tree = descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def start_up(tmp_path: Path, workers: int, **extra_env: str
             ) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """`python -m producer up --workers K` in its own session; killed (tree too) if it outlives us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env.update(MODELFLEET_LOCAL_REDIS_DIR=str(tmp_path / "redis"),
               MODELFLEET_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
               MODELFLEET_DATA_ROOT=str(EXAMPLE_DATA), **extra_env)
    with cli_process([sys.executable, "-m", "producer", "up", "--workers", str(workers)],
                     tmp_path, env) as started:
        yield started


def run_cli(args: Sequence[str], settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`modelfleet ARGS` as a user runs it, against `settings`' Redis and artifact root."""
    env = {**os.environ, **settings.to_env()}
    return subprocess.run([sys.executable, "-m", "producer", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
