"""modelfleet runs for the benchmark: a real redis-server, real celery workers, real submit.

Workers are started and answer a ping before t0; their startup is timed apart.
Each repeat is a fresh batch with `no_cache=True`, so nothing is served from
the step cache. The wall time runs from the call to `submit` to the last
model's `done_deploy` timestamp (written by the deploy stage on the worker).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from producer.local import LocalWorkers, RedisServer
from producer.spec import Batch
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings


@dataclass(frozen=True)
class FleetRun:
    wall: float
    submit: float
    finishes: list[float]


@dataclass
class Fleet:
    """A live Redis plus workers; `run` submits one batch and times it."""

    settings: Settings
    startup: float
    workers: LocalWorkers

    def run(self, batch: Batch, timeout: float) -> FleetRun:
        app = create_app(self.settings)
        runtime = Runtime.from_settings(self.settings)
        try:
            t0 = time.time()
            handle = submit(batch, app, runtime, no_cache=True)
            submitted = time.time()
            status = handle.wait(timeout=timeout, poll=0.2)
            if status.counts != {"deployed": len(batch.models)}:
                raise RuntimeError(f"batch {handle.batch_id} did not deploy every model: {status.counts}")
            states = runtime.tracker.model_states(handle.batch_id, [m.name for m in batch.models])
            done = [float(s["done_deploy"]) - t0 for s in states.values()]
        finally:
            app.close()
            runtime.redis.close()
        return FleetRun(max(done), submitted - t0, sorted(done))


@contextmanager
def fleet(base: Settings, workdir: Path, processes: int, concurrency: int,
          extra_args: Sequence[str] = ()) -> Iterator[Fleet]:
    """A fresh redis-server and `processes` workers of `concurrency` each, stopped on exit."""
    started = time.perf_counter()
    with RedisServer(workdir / "redis") as server:
        settings = base.model_copy(update={"artifact_root": workdir / "artifacts"}).with_broker(server.url)
        workers = LocalWorkers(settings, processes, workdir / "logs", concurrency=concurrency,
                               extra_args=extra_args)
        try:
            workers.start(wait=180)
            yield Fleet(settings, time.perf_counter() - started, workers)
        finally:
            workers.stop()
