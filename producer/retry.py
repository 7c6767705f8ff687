"""Resend only the failed or cancelled models of a batch, under the same batch id."""

from __future__ import annotations

import time
from collections import Counter

from celery import Celery

from producer.handle import BatchHandle
from producer.submit import (
    check_broker,
    check_writable,
    cyclic_gc_paused,
    live_slots,
    plan_chains,
    send_planned,
)
from workers.app import PRIORITIES
from workers.contracts import ModelSpec
from workers.runtime import Runtime
from workers.tracking import RETRYABLE


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
    check_writable(runtime)
    # A cancelled batch is un-cancelled for the models we resend.
    tracker.set_cancelled(batch_id, False)
    tracker.reset_models(batch_id, names)
    tracker.update_batch(batch_id, retries=[*record.get("retries", []),
                                            {"at": time.time(), "models": names}])
    with cyclic_gc_paused():
        send_planned(app, runtime, batch_id,
                     plan_chains(batch_id, models, bool(record.get("no_cache")), record.get("pack", "auto"),
                                 tracker.model_costs(), record.get("max_parallel"), live_slots(runtime)),
                     priority=PRIORITIES[record.get("priority") or "normal"])
    return BatchHandle(batch_id, runtime), names
