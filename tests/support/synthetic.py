"""A synthetic batch written through the real storage classes, as the stages would leave it."""

from __future__ import annotations

import time
import uuid

from workers.runtime import Runtime
from workers.settings import STAGES

HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)> \'quoted\''


def synthetic_batch(rt: Runtime, models: int, failed_every: int = 50, running_every: int = 7) -> str:
    """A batch of `models` models: most deployed (with metrics, version, task ids), every
    `failed_every`-th failed at train with a hostile error, every `running_every`-th at train."""
    batch_id = f"synthetic-{uuid.uuid4().hex[:8]}"
    names = [f"model-{i:05d}" for i in range(models)]
    created = time.time()  # the newest batch of the index (recent_batches lists it first)
    rt.tracker.create_batch({"id": batch_id, "name": "synthetic", "models": names, "created": created,
                             "primary_metrics": {n: "accuracy" for n in names},
                             "submitted_by": "tests"}, names)
    writes = rt.tracker.writes()
    for i, name in enumerate(names):
        done = {f"done_{s}": created + 1 + j for j, s in enumerate(STAGES)}
        if i % failed_every == 0:
            fields = {"status": "failed", "stage": "train", "done_preprocess": created + 1,
                      "error": f"ValueError: {HOSTILE} {name}"}
        elif i % running_every == 0:
            fields = {"status": "running", "stage": "train", "done_preprocess": created + 1}
        else:
            fields = {"status": "deployed", "stage": "deploy", **done, "version": 1,
                      "promoted": "1", "metrics": {"accuracy": (i % 97) / 97, "f1_macro": 0.5}}
        rt.tracker.state(writes, batch_id, name, **fields)
    writes.execute()
    rt.tracker.record_task_ids(batch_id, {n: [uuid.uuid4().hex for _ in STAGES] for n in names})
    return batch_id
