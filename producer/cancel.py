"""Cancel a batch: revoke what has not started, stop the rest after its current stage.

Three guards together leave no model running forever: the batch's cancelled flag
(every stage checks it when it begins, also on workers started later), revoking
the not-yet-started models' tasks (workers drop them unopened), and marking those
models cancelled here. Models already deployed stay deployed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from celery import Celery

from workers.runtime import Runtime
from workers.tracking import TERMINAL


@dataclass(frozen=True)
class CancelReport:
    batch_id: str
    # Had not started: their tasks were revoked and they are marked cancelled.
    revoked: list[str] = field(default_factory=list)
    # Mid-stage: they finish that stage, then the next one sees the flag and stops.
    stopping: list[str] = field(default_factory=list)
    # Already deployed, failed or cancelled: left as they are.
    finished: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cancel_batch(runtime: Runtime, app: Celery, batch_id: str) -> CancelReport:
    record = runtime.tracker.get_batch(batch_id)
    if record is None:
        raise KeyError(f"no batch {batch_id!r}")
    # The flag first: any stage that begins from now on skips its work.
    runtime.tracker.set_cancelled(batch_id)
    states = runtime.tracker.model_states(batch_id, record["models"])
    task_ids = runtime.tracker.task_ids(batch_id)
    revoked, stopping, finished, ids = [], [], {}, []
    for name, state in states.items():
        status = state.get("status", "queued")
        if status in TERMINAL:
            finished[name] = status
        elif status == "queued":
            revoked.append(name)
            ids += task_ids.get(name, [])
        else:
            stopping.append(name)
    if ids:
        app.control.revoke(ids)
    for name in revoked:
        runtime.tracker.set_model_state(batch_id, name, status="cancelled",
                                        error="cancelled before it started")
    runtime.tracker.update_batch(batch_id, cancelled=time.time())
    return CancelReport(batch_id, revoked, stopping, finished)
