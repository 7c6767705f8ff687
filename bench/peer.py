"""A hand-written Celery app with modelfleet's shape: what plain Celery costs per chain.

Four chained tasks (preprocess -> train -> evaluate -> deploy), one queue per
stage, JSON, acks late, prefetch 1, a Redis result backend, worker events and
task-sent events on. Each task only passes a small dict along; deploy writes
its finish time into Redis (hash `peer:done`), as modelfleet's deploy stage
writes `done_deploy`. Workers are plain `celery worker` processes:

    MODELFLEET_BROKER_URL=redis://... celery -A bench.peer worker -Q preprocess,train,evaluate,deploy -c 1
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery, chain, group
from kombu import Queue

from bench.fleet import FleetRun, cpu_seconds
from bench.teardown import close_app
from producer.local import LocalWorkers, RedisServer
from workers.settings import Settings

STAGES = ("preprocess", "train", "evaluate", "deploy")
DONE = "peer:done"


def create_app(url: str) -> Celery:
    app = Celery("peer", broker=url, backend=url)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, worker_prefetch_multiplier=1,
        worker_send_task_events=True, task_send_sent_event=True,
        task_queues=[Queue(s) for s in STAGES], task_default_queue=STAGES[0],
        task_routes={f"peer.{s}": {"queue": s} for s in STAGES},
        broker_connection_retry_on_startup=True,
    )
    for stage, run in zip(STAGES, (preprocess, train, evaluate), strict=False):
        app.task(name=f"peer.{stage}")(run)
    app.task(name="peer.deploy", bind=True)(deploy)
    return app


# The tasks: nothing but passing the dict along; deploy also records when it finished.
def preprocess(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def train(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def evaluate(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def deploy(task: Any, payload: dict[str, Any]) -> dict[str, Any]:
    task.app.backend.client.hset(DONE, payload["model"], repr(time.time()))
    return payload


def __getattr__(name: str) -> Any:  # `celery -A bench.peer` looks up `app`
    if name == "app":
        globals()["app"] = created = create_app(os.environ["MODELFLEET_BROKER_URL"])
        return created
    raise AttributeError(name)


class PeerWorkers(LocalWorkers):
    """k `celery -A bench.peer worker` processes at loglevel WARNING (one BLAS thread each)."""

    def command(self, name: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "bench.peer", "worker", "-Q", ",".join(STAGES),
                "-c", str(self.concurrency), "-n", name, "--loglevel", "WARNING", *self.extra_args]


@dataclass
class Peer:
    url: str
    startup: float
    workers: PeerWorkers
    redis_pid: int

    def run(self, n: int, timeout: float) -> FleetRun:
        """Send n chains (one group, as one would write it) and time them to the last deploy."""
        app, client = create_app(self.url), redis.Redis.from_url(self.url)
        worker_pids = [p.pid for p in self.workers.procs]
        try:
            client.delete(DONE)
            cpu0 = cpu_seconds(worker_pids), cpu_seconds([self.redis_pid])
            t0 = time.time()
            group(chain(app.signature("peer.preprocess", args=({"model": f"m{i:05d}", "stage": 0},)),
                        *(app.signature(f"peer.{s}") for s in STAGES[1:])) for i in range(n)).apply_async()
            submitted = time.time()
            deadline = time.monotonic() + timeout
            while client.hlen(DONE) < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"peer: {client.hlen(DONE)} of {n} chains done after {timeout}s")
                time.sleep(0.05)
            done = sorted(float(v) - t0 for v in client.hvals(DONE))
            cpu1 = cpu_seconds(worker_pids), cpu_seconds([self.redis_pid])
        finally:
            close_app(app)
            client.close()
        return FleetRun(done[-1], submitted - t0, done, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])


@contextmanager
def peer(workdir: Path, processes: int, concurrency: int = 1) -> Iterator[Peer]:
    """A fresh redis-server and `processes` peer workers of `concurrency` each, stopped on exit."""
    started = time.perf_counter()
    with RedisServer(workdir / "redis") as server:
        settings = Settings().with_broker(server.url)  # only the broker URL reaches the workers
        workers = PeerWorkers(settings, processes, workdir / "logs", concurrency=concurrency,
                              name_prefix="peer")
        try:
            workers.start(wait=180)
            assert server.proc is not None
            yield Peer(server.url, time.perf_counter() - started, workers, server.proc.pid)
        finally:
            workers.stop()
