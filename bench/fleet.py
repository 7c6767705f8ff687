"""modelfleet runs for the benchmark: a real redis-server, real celery workers, real submit.

Workers are started and answer a ping before t0; their startup is timed apart.
Each repeat is a fresh batch with `no_cache=True`, so nothing is served from
the step cache. The wall time runs from the call to `submit` to the last
model's `done_deploy` timestamp (written by the deploy stage on the worker).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.teardown import close_app
from producer.local import LocalWorkers, RedisServer
from producer.spec import Batch
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings
from workers.tracking import DEPLOYED


@dataclass(frozen=True)
class FleetRun:
    wall: float
    submit: float
    finishes: list[float]
    # CPU seconds the worker processes (with their pool children) and redis-server used
    # during the batch: unlike wall time, barely moved by other load on the machine.
    cpu_workers: float
    cpu_redis: float


def _tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for c in children for p in _tree(int(c)))]


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes and all their descendants (Linux /proc)."""
    ticks = 0
    for pid in (p for root in pids for p in _tree(root)):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    """A live Redis plus workers; `run` submits one batch and times it."""

    settings: Settings
    startup: float
    workers: LocalWorkers
    redis_pid: int

    def run(self, batch: Batch, timeout: float) -> FleetRun:
        app = create_app(self.settings)
        runtime = Runtime.from_settings(self.settings)
        worker_pids = [p.pid for p in self.workers.procs]
        try:
            cpu0 = cpu_seconds(worker_pids), cpu_seconds([self.redis_pid])
            t0 = time.time()
            handle = submit(batch, app, runtime, no_cache=True)
            submitted = time.time()
            status = handle.wait(timeout=timeout, poll=0.2)
            if sum(status.counts.get(s, 0) for s in DEPLOYED) != len(batch.models):
                raise RuntimeError(f"batch {handle.batch_id} did not deploy every model: {status.counts}")
            states = runtime.tracker.model_states(handle.batch_id, [m.name for m in batch.models])
            done = [float(s["done_deploy"]) - t0 for s in states.values()]
            cpu1 = cpu_seconds(worker_pids), cpu_seconds([self.redis_pid])
        finally:
            close_app(app)
            runtime.redis.close()
        return FleetRun(max(done), submitted - t0, sorted(done), cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])

    def run_cli(self, spec: Path, n: int, timeout: float) -> FleetRun:
        """`modelfleet submit SPEC --wait --no-cache` as a user runs it: wall = the command's run time.

        The command is a fresh process (its start and imports count); the finish
        offsets are each model's `done_deploy` from the same t0, and `submit` is 0
        (it happens inside the command).
        """
        worker_pids = [p.pid for p in self.workers.procs]
        env = {**os.environ, **self.settings.to_env()}
        cpu0 = cpu_seconds(worker_pids), cpu_seconds([self.redis_pid])
        t0 = time.time()
        script = Path(sys.executable).with_name("modelfleet")  # the installed console script
        command = [str(script)] if script.is_file() else [sys.executable, "-m", "producer"]
        proc = subprocess.run([*command, "submit", str(spec), "--wait", "--no-cache"], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        wall = time.time() - t0
        cpu1 = cpu_seconds(worker_pids), cpu_seconds([self.redis_pid])
        found = re.search(r"submitted batch (\S+)", proc.stdout)
        if proc.returncode != 0 or found is None:
            raise RuntimeError(f"modelfleet submit failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                               f"\n{proc.stderr[-2000:]}")
        runtime = Runtime.from_settings(self.settings)
        try:
            record = runtime.tracker.get_batch(found.group(1))
            assert record is not None and len(record["models"]) == n, f"expected {n} models"
            states = runtime.tracker.model_states(found.group(1), record["models"])
        finally:
            runtime.redis.close()
        done = sorted(float(s["done_deploy"]) - t0 for s in states.values())
        return FleetRun(wall, 0.0, done, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])


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
            assert server.proc is not None
            yield Fleet(settings, time.perf_counter() - started, workers, server.proc.pid)
        finally:
            workers.stop()
