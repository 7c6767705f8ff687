"""`python -m workers.forkserver`: the fork server of the local workers (workers/forked.py).

It imports what every worker imports (workers/forkserver_preload.py), then forks one worker
per request. Requests come on stdin, one JSON object a line: {"argv", "env", "cwd", "log"}.
It answers on stdout, one JSON object a line: {"pid": N} for each request, in order, and
{"exited": N, "code": C} when a worker it forked ends (C as Popen's returncode: -signal
for a signal). It exits when its stdin closes; the workers it forked live on until stopped.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import sys
import traceback
from typing import Any


def run_worker(argv: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """In a forked child: become `python -m workers ARGV` as a fresh process would be: its own
    session, the caller's working directory, only the environment given (its settings are
    read now), its output appended to `log`."""
    os.setsid()  # like Popen(start_new_session=True): stopped as a group
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # What `python -m` puts first on sys.path: its folder, then PYTHONPATH (a team's package).
    # The server's own entries stay behind them.
    given = [os.path.join(cwd, p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [cwd, *given]
    importlib.invalidate_caches()

    from workers.launch import celery_main, prepare_worker
    from workers.settings import settings_or_exit

    prepare_worker(settings_or_exit().check_cache_dir)  # done by the server: returns at once
    celery_main(argv)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


class Server:
    def __init__(self) -> None:
        self.requests = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
        self.answers = os.fdopen(os.dup(1), "w", buffering=1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)  # a stray print must not break the protocol
        os.close(devnull)
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through wake_w
        self.wake_w = wake_w
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.requests, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    def serve(self) -> None:
        pending = b""
        while True:
            for key, _ in self.selector.select():
                if key.fd == self.wake_r:
                    os.read(self.wake_r, 4096)
                    self.reap()
                    continue
                data = self.requests.read(65536)
                if not data:
                    return  # the caller is gone
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    self.answer({"pid": self.fork(json.loads(line))})

    def answer(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.answers.write(json.dumps(message) + "\n")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.answer({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

    def fork(self, request: dict[str, Any]) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.selector.close()
            for fd in (self.wake_r, self.wake_w, self.answers.fileno()):
                os.close(fd)
            devnull = os.open(os.devnull, os.O_RDONLY)  # its stdin: nothing, as the server's requests
            os.dup2(devnull, 0)
            os.close(devnull)
            run_worker(**request)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:]:
        print("usage: python -m workers.forkserver (no arguments: LocalWorkers start it and send "
              "requests on its stdin; see workers/forked.py)", file=sys.stderr)
        raise SystemExit(2)
    import workers.forkserver_preload  # noqa: F401

    Server().serve()
