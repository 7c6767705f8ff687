"""Build the canvas for a batch, record the batch, send it, return a handle."""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from celery import Celery, chain, group
from kombu.exceptions import OperationalError

from producer.spec import Batch
from producer.status import BatchStatus, batch_status
from workers import keys
from workers.app import TASK_NAMES
from workers.contracts import ChainState, ModelJob
from workers.runtime import Runtime
from workers.settings import STAGES


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached; nothing was sent."""


def build_canvas(app: Celery, batch_id: str, batch: Batch, no_cache: bool = False) -> group:
    """group(chain(preprocess, train, evaluate, deploy) per model), each stage on its queue."""
    chains = []
    for model in batch.models:
        state = ChainState(job=ModelJob(batch_id=batch_id, model=model, no_cache=no_cache))
        first = app.signature(TASK_NAMES[STAGES[0]], args=(state.model_dump(mode="json"),),
                              queue=STAGES[0])
        rest = [app.signature(TASK_NAMES[s], queue=s) for s in STAGES[1:]]
        chains.append(chain(first, *rest))
    return group(chains)


def check_broker(app: Celery, timeout: float) -> None:
    """Fail fast with a clear message instead of hanging on an unreachable broker."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {conn.as_uri()}: {exc}") from exc


@dataclass
class BatchHandle:
    batch_id: str
    runtime: Runtime

    def status(self) -> BatchStatus:
        return batch_status(self.runtime, self.batch_id)

    def wait(self, timeout: float | None = None, poll: float = 0.5,
             on_progress: Callable[[BatchStatus], None] | None = None) -> BatchStatus:
        """Poll the tracking records until every model is deployed, failed or cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if on_progress is not None:
                on_progress(status)
            if status.done:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {self.batch_id} not done after {timeout}s: "
                                   f"{status.counts}")
            time.sleep(poll)


def submit(batch: Batch, app: Celery, runtime: Runtime, no_cache: bool = False,
           batch_id: str | None = None) -> BatchHandle:
    """Record the batch and send its canvas; nothing is sent if the broker is down."""
    batch_id = batch_id or f"{batch.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    check_broker(app, runtime.settings.broker_connect_timeout)
    canvas = build_canvas(app, batch_id, batch, no_cache)
    # Task ids fixed now and kept per model, so `modelfleet cancel` can revoke them.
    canvas.freeze()
    task_ids = {m.name: json.dumps([t.id for t in c.tasks])
                for m, c in zip(batch.models, canvas.tasks, strict=True)}
    runtime.tracker.create_batch({
        "id": batch_id, "name": batch.name, "spec": batch.source, "spec_path": batch.path,
        "models": [m.name for m in batch.models], "created": time.time(), "no_cache": no_cache,
        "primary_metrics": {m.name: m.primary_metric for m in batch.models},
        "submitted_by": _user(), "host": socket.gethostname(), "git_commit": _git_commit(batch.path),
    }, [m.name for m in batch.models])
    runtime.redis.hset(keys.batch_tasks(batch_id), mapping=task_ids)
    send(app, canvas)
    return BatchHandle(batch_id, runtime)


def send(app: Celery, canvas: group) -> None:
    # One producer connection for the whole batch instead of one per message.
    with app.producer_or_acquire() as producer:
        canvas.apply_async(producer=producer)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _git_commit(spec_path: str) -> str | None:
    """The commit of the checkout the spec lives in, so a result traces to its exact spec."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(spec_path).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
