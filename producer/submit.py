"""Build the canvas for a batch, record the batch, send it, return a handle."""

from __future__ import annotations

import gc
import getpass
import json
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from celery import Celery, chain, group
from celery.canvas import _chain
from kombu.exceptions import OperationalError

from producer.spec import Batch
from producer.status import BatchStatus, batch_status
from workers import keys
from workers.app import TASK_NAMES
from workers.contracts import ChainState, ModelJob, ModelSpec
from workers.runtime import Runtime
from workers.settings import STAGES
from workers.tracking import RETRYABLE


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached; nothing was sent."""


def build_canvas(app: Celery, batch_id: str, batch: Batch, no_cache: bool = False) -> group:
    """group(chain(preprocess, train, evaluate, deploy) per model), each stage on its queue."""
    chains = []
    for model in batch.models:
        state = ChainState(job=ModelJob(batch_id=batch_id, model=model, no_cache=no_cache))
        # A short label instead of celery's repr of the whole message: Flower and the logs
        # show which model it is, and nobody pays for repr()ing the spec on every send.
        label = f"{batch_id}/{model.name}"
        first = app.signature(TASK_NAMES[STAGES[0]], args=(state.model_dump(mode="json"),),
                              queue=STAGES[0], argsrepr=label)
        rest = [app.signature(TASK_NAMES[s], queue=s, argsrepr=label) for s in STAGES[1:]]
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
    runtime.tracker.create_batch({
        "id": batch_id, "name": batch.name, "spec": batch.source, "spec_path": batch.path,
        "models": [m.name for m in batch.models], "created": time.time(), "no_cache": no_cache,
        "primary_metrics": {m.name: m.primary_metric for m in batch.models},
        "submitted_by": _user(), "host": socket.gethostname(), "git_commit": _git_commit(batch.path),
    }, [m.name for m in batch.models],
        specs={m.name: m.model_dump_json() for m in batch.models})
    record_task_ids(runtime, batch_id, batch.models, canvas)
    send(app, canvas)
    return BatchHandle(batch_id, runtime)


def record_task_ids(runtime: Runtime, batch_id: str, models: list[ModelSpec], canvas: group) -> None:
    """Fix the chains' task ids now and keep them per model, so `cancel` can revoke them."""
    canvas.freeze()
    task_ids = {m.name: json.dumps([t.id for t in c.tasks])
                for m, c in zip(models, canvas.tasks, strict=True)}
    runtime.redis.hset(keys.batch_tasks(batch_id), mapping=task_ids)


class NothingToRetry(RuntimeError):
    """The batch has no failed or cancelled model (or is still running)."""


def models_to_retry(runtime: Runtime, batch_id: str) -> list[ModelSpec]:
    """The stored specs of a batch's failed or cancelled models; NothingToRetry if none."""
    tracker = runtime.tracker
    record = tracker.get_batch(batch_id)
    if record is None:
        raise KeyError(f"no batch {batch_id!r}")
    states = tracker.model_states(batch_id, record["models"])
    names = [n for n, st in states.items() if st.get("status") in RETRYABLE]
    if not names:
        raise NothingToRetry(f"batch {batch_id} has no failed or cancelled model "
                             f"({dict(Counter(st.get('status', '?') for st in states.values()))})")
    specs = tracker.model_specs(batch_id)
    missing = [n for n in names if n not in specs]
    if missing:
        raise NothingToRetry(f"batch {batch_id} was submitted without stored model specs; "
                             f"cannot resend {missing}")
    return [ModelSpec.model_validate(specs[n]) for n in names]


def retry(batch_id: str, app: Celery, runtime: Runtime) -> tuple[BatchHandle, list[str]]:
    """Resend only the failed or cancelled models of a batch, under the same batch id.

    The other models are not touched; the resent ones start from their stored
    spec, and the step cache makes the stages that had succeeded free.
    """
    tracker = runtime.tracker
    models = models_to_retry(runtime, batch_id)
    names = [m.name for m in models]
    record = tracker.get_batch(batch_id)
    assert record is not None
    check_broker(app, runtime.settings.broker_connect_timeout)
    canvas = build_canvas(app, batch_id, Batch(record["name"], models, record.get("spec", ""),
                                               record.get("spec_path", "")),
                          no_cache=bool(record.get("no_cache")))
    # A cancelled batch is un-cancelled for the models we resend.
    runtime.redis.delete(keys.cancelled(batch_id))
    tracker.reset_models(batch_id, names)
    tracker.update_batch(batch_id, retries=[*record.get("retries", []),
                                            {"at": time.time(), "models": names}])
    record_task_ids(runtime, batch_id, models, canvas)
    send(app, canvas)
    return BatchHandle(batch_id, runtime), names


def send(app: Celery, canvas: group) -> None:
    """Publish the group through one producer, pipelined to Redis in batches.

    kombu >= 5.7 buffers a producer's publishes in a Redis pipeline inside
    `producer.batch()` (other transports publish one by one), so 10,000 chains
    cost about 20 round trips instead of 20,000 (each message and its task-sent event).
    """
    firsts = [c.tasks[0] for c in canvas.tasks if isinstance(c, _chain)]
    with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
        # chain.run() drops a `producer` option and takes a pooled one per message. Set on
        # each chain's first signature, ours reaches send_task; celery deep-copies signature
        # options on the way, so the copy must be the same live producer.
        producer.__deepcopy__ = lambda memo: producer
        for sig in firsts:
            sig.options["producer"] = producer
        try:
            canvas.apply_async(producer=producer)
        finally:
            for sig in firsts:
                sig.options.pop("producer", None)
            del producer.__deepcopy__


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


def close_app(app: Celery) -> None:
    """Close a producer app before its Redis goes away.

    Sending a task subscribes the app to the task's result channel (Celery's Redis
    backend); a result handle collected later unsubscribes, and against a stopped
    Redis that means ~20 s of reconnect retries wherever the collection happens.
    Forget the subscriptions while Redis is still up.
    """
    gc.collect()
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.subscribed_to.clear()
        consumer.stop()
    app.close()
