"""Workers as separate hosts: one network namespace each, Redis only over a virtual link.

The layout, as several machines would have it:

    root namespace (the "broker host" and the producer)
      bridge mfb<id>  10.231.X.1/24  <- redis-server binds here only, with a password
        |- veth -> namespace mfh<id>0  10.231.X.10/24  worker ns0@host0
        '- veth -> namespace mfh<id>1  10.231.X.11/24  worker ns1@host1
    shared: the artifact root (one directory, as a compose volume / NFS mount would be)

Needs root for `ip netns`; skips locally without it, but fails in CI (CI=true).
"""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from producer.local import LocalWorkers, RedisServer
from tests.conftest import EXAMPLE_DATA, load, run_batch
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import STAGES, Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Hosts:
    """n network namespaces on one bridge; `gateway` is the root side's address."""

    count: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    subnet: int = 0
    namespaces: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"mfb{self.run_id}"

    @property
    def gateway(self) -> str:
        return f"10.231.{self.subnet}.1"

    def address(self, i: int) -> str:
        return f"10.231.{self.subnet}.{10 + i}"

    def create(self) -> Hosts:
        used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
        self.subnet = random.choice([x for x in range(1, 255) if f"10.231.{x}." not in used])
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(self.count):
            ns, outside, inside = f"mfh{self.run_id}{i}", f"mfv{self.run_id}{i}", f"mfp{self.run_id}{i}"
            self.namespaces.append(ns)
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            # Without lo up, anything in the namespace that talks to itself fails.
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def delete(self) -> None:
        # Deleting a namespace deletes the veth end inside it, and with it the pair.
        for i, ns in enumerate(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            # Left in the root namespace if creation failed before moving its peer.
            subprocess.run(["ip", "link", "del", f"mfv{self.run_id}{i}"], capture_output=True,
                           timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
        self.namespaces = []


class NamespaceWorkers(LocalWorkers):
    """One `celery worker` per namespace, started with `ip netns exec NS ...`.

    Host i consumes every other stage queue (host0: preprocess, evaluate; host1:
    train, deploy), so every chain crosses hosts at every stage: each stage must
    read what the previous one stored on the other host through the shared root.
    """

    def __init__(self, settings: Settings, namespaces: Sequence[str], log_dir: Path) -> None:
        super().__init__(settings, len(namespaces), log_dir)
        self.names = [f"ns{i}@host{i}" for i in range(len(namespaces))]
        self.namespace_of = dict(zip(self.names, namespaces, strict=True))
        self.queues_of = {name: STAGES[i::len(namespaces)] for i, name in enumerate(self.names)}

    def command(self, name: str) -> list[str]:
        cmd = super().command(name)
        cmd[cmd.index("-Q") + 1] = ",".join(self.queues_of[name])
        return ["ip", "netns", "exec", self.namespace_of[name], *cmd]


def _net_namespace(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    probe = Hosts(0)
    try:
        _ip("netns", "add", f"mfh{probe.run_id}probe")
        _ip("netns", "del", f"mfh{probe.run_id}probe")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        reason = f"`ip netns add` is not permitted here: {getattr(exc, 'stderr', exc)}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    net = Hosts(2)
    try:
        yield net.create()
    finally:
        net.delete()


def test_batch_runs_on_workers_in_separate_network_namespaces(tmp_path: Path, hosts: Hosts,
                                                              uniq: str) -> None:
    password = secrets.token_hex(16)
    with RedisServer(tmp_path / "redis", host=hosts.gateway, password=password) as server:
        # Redis listens on the bridge only: not on loopback.
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(host="127.0.0.1", port=server.port, password=password,
                        socket_connect_timeout=2).ping()
        settings = Settings(broker_url=server.url,  # type: ignore[arg-type]
                            artifact_root=tmp_path / "shared-artifacts", data_root=EXAMPLE_DATA,
                            lease_ttl=3.0)
        with NamespaceWorkers(settings, hosts.namespaces, tmp_path / "logs") as workers:
            # Each worker really runs in its own namespace, not in ours.
            spaces = {_net_namespace(p.pid) for p in workers.procs}
            assert len(spaces) == 2 and _net_namespace("self") not in spaces
            # Seen from the broker, the workers connect from their namespace addresses.
            clients = redis.Redis.from_url(server.url).client_list()
            peers = {c["addr"].rsplit(":", 1)[0] for c in clients}
            assert {hosts.address(0), hosts.address(1)} <= peers

            models = [{"name": f"mh-{d}-{i}-{uniq}", "task": "classification",
                       "dataset": {"kind": "sklearn", "name": d},
                       "estimator": {"class_path": "sklearn.ensemble.RandomForestClassifier",
                                     "params": {"n_estimators": 20 + i, "random_state": 0}}}
                      for d in ("iris", "wine") for i in range(4)]
            # pack: 1, four tasks a model: small models would otherwise be fused into one task,
            # run where the preprocess queue is served (docs/design.md).
            batch = load(tmp_path, {"name": f"multihost-{uniq}", "pack": 1, "models": models}, settings)
            app = create_app(settings)
            try:
                runtime = Runtime.from_settings(settings)
                handle, status = run_batch(batch, app, runtime, timeout=300)
                runs = runtime.tracker.runs(batch_id=handle.batch_id)
            finally:
                app.close()

    assert status.counts == {"promoted": 8}
    assert len(runs) == 8 * len(STAGES)
    # Work was done in every namespace, each stage on the host that serves its queue,
    # so every model handed its artifacts across hosts through the shared root.
    assert {r["worker"] for r in runs} == set(workers.names)
    for run in runs:
        assert run["stage"] in workers.queues_of[run["worker"]], run
    hosts_of: dict[str, set[str]] = {}
    for run in runs:
        hosts_of.setdefault(run["model"], set()).add(run["worker"])
    assert all(len(w) == 2 for w in hosts_of.values()), hosts_of
    assert any((tmp_path / "shared-artifacts").rglob("*")), "nothing in the shared artifact root"
