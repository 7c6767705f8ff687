"""A real Redis Sentinel group on loopback: a master, a replica and three sentinels.

All are the bundled redis-server (`--replicaof` through its config, `--sentinel` with a
generated config file that the sentinel rewrites as it learns). Short detection and
failover timeouts, so a killed master is replaced in seconds. Everything started
here is stopped on exit, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from producer.local import RedisServer, find_redis_server, free_port, redis_quoted, stop_process, wait_for

MASTER_NAME = "mymaster"


class SentinelProcess:
    """`redis-server sentinel.conf --sentinel` on a free loopback port."""

    def __init__(self, data_dir: Path, master: RedisServer, password: str, down_after_ms: int,
                 failover_timeout_ms: int) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        assert master.password is not None
        self.config = "\n".join([
            f"port {self.port}", "bind 127.0.0.1", "daemonize no", f'dir "{data_dir.resolve()}"',
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2",
            f'sentinel auth-pass {MASTER_NAME} "{redis_quoted(master.password)}"',
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
            # The sentinels' own password, and the one they use with each other.
            f'requirepass "{redis_quoted(password)}"', f'sentinel sentinel-pass "{redis_quoted(password)}"',
            ""])

    def start(self) -> SentinelProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "sentinel.conf"
        # The sentinel rewrites this file (it holds passwords): the owner's alone.
        conf.touch(mode=0o600)
        conf.write_text(self.config)
        log = (self.data_dir / "sentinel.log").open("ab")
        self.proc = subprocess.Popen([find_redis_server(), str(conf), "--sentinel"], stdout=log,
                                     stderr=log, start_new_session=True)
        wait_for(lambda: self._ping(), 15, f"sentinel on port {self.port}")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=2, decode_responses=True)

    def _ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"sentinel exited with {self.proc.returncode}; see {self.data_dir}")
        with contextlib.suppress(redis.exceptions.RedisError):
            return bool(self.client().ping())
        return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@dataclass
class SentinelGroup:
    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelProcess]
    password: str
    sentinel_password: str

    @property
    def url(self) -> str:
        """The broker URL a team would set: every sentinel, the master's password."""
        return ";".join(f"sentinel://:{self.password}@127.0.0.1:{s.port}/0" for s in self.sentinels)

    def master_port(self) -> int | None:
        """The master's port as a sentinel reports it now (None while it cannot say)."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.exceptions.RedisError):
                address = sentinel.client().sentinel_get_master_addr_by_name(MASTER_NAME)
                if address:
                    return int(address[1])
        return None

    def ready(self) -> bool:
        """The replica is in sync and every sentinel knows it and the other two sentinels."""
        link = redis.Redis(port=self.replica.port, password=self.password).info("replication")
        if link.get("master_link_status") != "up":
            return False
        for sentinel in self.sentinels:
            client = sentinel.client()
            if (len(client.sentinel_slaves(MASTER_NAME)) != 1
                    or len(client.sentinel_sentinels(MASTER_NAME)) != len(self.sentinels) - 1):
                return False
        return True

    def kill_master(self) -> None:
        """SIGKILL: no shutdown, no last fsync, no goodbye to the replica."""
        assert self.master.proc is not None
        os.killpg(self.master.proc.pid, 9)
        self.master.proc.wait(10)


@contextlib.contextmanager
def sentinel_group(tmp: Path, password: str, sentinel_password: str, down_after_ms: int = 1000,
                   failover_timeout_ms: int = 2000) -> Iterator[SentinelGroup]:
    with contextlib.ExitStack() as stack:
        master = stack.enter_context(RedisServer(tmp / "master", password=password))
        replica = stack.enter_context(RedisServer(
            tmp / "replica", password=password,
            config=f'replicaof 127.0.0.1 {master.port}\nmasterauth "{redis_quoted(password)}"\n'))
        # The replica first: a sentinel finds replicas in the master's INFO, which it reads
        # on connecting and then only every 10 s.
        wait_for(lambda: redis.Redis(port=replica.port, password=password).info("replication")
                 .get("master_link_status") == "up", 15, "the replica in sync")
        sentinels = []
        for i in range(3):
            sentinel = SentinelProcess(tmp / f"sentinel{i}", master, sentinel_password, down_after_ms,
                                       failover_timeout_ms)
            stack.callback(sentinel.stop)
            sentinels.append(sentinel.start())
        group = SentinelGroup(master, replica, sentinels, password, sentinel_password)
        # Sentinels find each other through hello messages on the master, every 2 s.
        wait_for(group.ready, 30, "three sentinels that know the replica and each other", interval=0.2)
        yield group
