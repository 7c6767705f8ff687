"""Local workers forked from a server that imported their libraries once.

A worker's start is mostly imports: scikit-learn, scipy, pandas, skops and Celery are ~3.3 s
of the ~4.2 s of CPU that `python -m workers worker` takes to answer its first ping on a
2-core VM. `modelfleet run`, `modelfleet up` and the tests start their workers on one
machine, often many, so they fork each one from a server that imported all that once
(`python -m workers.forkserver`, one per calling process, started on first use): ~0.6 s of
CPU and ~1.1 s to the first ping. Compose, Kubernetes and `modelfleet worker` start one
worker per process (workers/__main__.py): nothing there to share.

Not multiprocessing's forkserver: its children import the caller's main module again (the
`modelfleet` script: the CLI in every worker), and a worker must be what its command
would be, with nothing of the caller in it.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from queue import Queue
from typing import IO

from workers.settings import ONE_BLAS_THREAD


class ForkServer:
    """The calling process's `python -m workers.forkserver`, and what it said."""

    def __init__(self) -> None:
        # One BLAS thread from the start: the pools the server makes at import are every worker's.
        env = {**os.environ, **ONE_BLAS_THREAD}
        # Its own session: a Ctrl-C at the terminal goes to the caller, which stops its workers
        # through this server; the server ends when the caller closes its stdin (or dies).
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.forkserver"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)
        self.owner = os.getpid()
        self.lock = threading.Lock()  # one request at a time: answers come in order
        self.pids: Queue[int | None] = Queue()
        self.codes: dict[int, int] = {}
        self.changed = threading.Condition()
        self.gone = False
        threading.Thread(target=self._listen, args=(self.proc.stdout,), daemon=True,
                         name="modelfleet-forkserver").start()

    def fork(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> int:
        request = {"argv": list(argv), "env": dict(env), "cwd": os.getcwd(), "log": str(log)}
        with self.lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            pid = self.pids.get()
        if pid is None:
            raise RuntimeError("the local workers' fork server exited; see its output above")
        return pid

    def _listen(self, answers: IO[bytes]) -> None:
        for line in answers:
            message = json.loads(line)
            if "pid" in message:
                self.pids.put(message["pid"])
            else:
                with self.changed:
                    self.codes[message["exited"]] = message["code"]
                    self.changed.notify_all()
        with self.changed:
            self.gone = True
            self.changed.notify_all()
        self.pids.put(None)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def server() -> ForkServer:
    """This process's fork server, started on first use and closed at exit."""
    global _server
    with _server_lock:
        if (_server is None or _server.gone or _server.proc.poll() is not None
                or _server.owner != os.getpid()):  # a dead server, or a forked copy's
            _server = ForkServer()
            atexit.register(_server.close)
        return _server


class ForkedWorker:
    """A forked worker, driven like the `subprocess.Popen` of its command."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.server = server()
        self.args = list(argv)
        self.pid = self.server.fork(argv, env, log)

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        with self.server.changed:
            return self._code()

    def _code(self) -> int | None:
        code = self.server.codes.get(self.pid)
        if code is None and self.server.gone and not pid_alive(self.pid):
            return -1  # its server died before it could say how the worker ended
        return code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.server.changed:
            while (code := self._code()) is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(["workers", *self.args], timeout or 0)
                # Told by the server; without one (it died) the worker is looked at every 0.1 s.
                self.server.changed.wait(0.1 if self.server.gone else left)
        return code


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` still runs (zombies have ended)."""
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc here
        return _signal_reaches(os.killpg, pgid)
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, _, group = stat[stat.rindex(")") + 2:].split(maxsplit=3)[:3]
        if state != "Z" and int(group) == pgid:
            return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs; a zombie (its server died and nothing reaps it) has ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here
        return _signal_reaches(os.kill, pid)
    return stat[stat.rindex(")") + 2] != "Z"


def _signal_reaches(send: Callable[[int, int], None], target: int) -> bool:
    """Where there is no /proc: whether signal 0 reaches `target` (a zombie counts as alive)."""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    return True
