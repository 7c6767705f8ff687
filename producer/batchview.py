"""What the batch page shows, as data: the recent batches with their counts, and one
batch's models with the state of each stage, its failures, its leaderboard and the
Celery task ids Flower knows them by. The page renders it (producer/cli/page.py).

A batch of 1,000 models costs three round trips: its record, its model states (one
pipeline) and its task ids; the list of batches three as well, counting the states of
at most COUNT_BUDGET models (newest batches first; older ones are listed uncounted).
"""

from __future__ import annotations

from dataclasses import dataclass

from producer.status import BatchStatus, ModelRow, ranked, summarize
from workers.runtime import Runtime
from workers.settings import STAGES

# Model states the list of batches reads at most (20,000: about 0.4 s on 2 busy cores).
COUNT_BUDGET = 20_000
# What a stage of a model can be, as the page colours it.
STAGE_STATES = ("done", "running", "retrying", "failed", "cancelled", "pending")


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    name: str
    created: float
    submitted_by: str
    models: int
    counts: dict[str, int] | None  # None: beyond COUNT_BUDGET, not counted


@dataclass(frozen=True)
class ModelProgress:
    name: str
    status: str
    stages: dict[str, str]  # stage -> one of STAGE_STATES
    task_ids: dict[str, str]  # stage -> the Celery task id of that stage (a pack's: shared)
    error: str


@dataclass(frozen=True)
class BatchView:
    status: BatchStatus
    created: float
    submitted_by: str
    models: list[ModelProgress]

    def failures(self) -> list[ModelProgress]:
        return [m for m in self.models if m.status in ("failed", "retrying")]

    def leaderboards(self) -> dict[str, list[ModelRow]]:
        """Metric -> the models ranked by it (each in its own direction), best first."""
        by_metric: dict[str, list[ModelRow]] = {}
        for row in self.status.rows:
            if row.value is not None and row.metric:
                by_metric.setdefault(row.metric, []).append(row)
        return {metric: ranked(rows) for metric, rows in sorted(by_metric.items())}


def recent_batches(runtime: Runtime, limit: int = 20, budget: int = COUNT_BUDGET) -> list[BatchSummary]:
    """The newest `limit` batches, newest first, with how many models are in each status
    (for as many of them as `budget` models allow)."""
    records = runtime.tracker.get_batches(runtime.tracker.list_batches(limit))
    counted: dict[str, list[str]] = {}
    for record in records:
        budget -= len(record["models"])
        if budget < 0:
            break
        counted[record["id"]] = record["models"]
    counts = runtime.tracker.status_counts(counted)
    return [BatchSummary(r["id"], r["name"], r["created"], r.get("submitted_by", ""),
                         len(r["models"]), counts.get(r["id"])) for r in records]


def batch_view(runtime: Runtime, batch_id: str) -> BatchView:
    """One batch as the page shows it; KeyError if there is no such batch."""
    record = runtime.tracker.get_batch(batch_id)
    if record is None:
        raise KeyError(f"no batch {batch_id!r}")
    states = runtime.tracker.model_states(batch_id, record["models"])
    task_ids = runtime.tracker.task_ids(batch_id)
    models = [ModelProgress(name, state.get("status", "unknown"), stage_states(state),
                            dict(zip(STAGES, task_ids.get(name, []), strict=False)),
                            state.get("error", ""))
              for name, state in states.items()]
    return BatchView(summarize(record, states), record["created"], record.get("submitted_by", ""),
                     models)


def stage_states(state: dict[str, str]) -> dict[str, str]:
    """Each stage of one model: done, the one it is at (running, retrying, failed), or not
    reached (pending; cancelled once the model is)."""
    status = state.get("status", "queued")
    not_done = [s for s in STAGES if not state.get(f"done_{s}")]
    # The stage a worker last began, if it is not done; else (it failed before any stage
    # began, or after its stage was recorded done) the first stage not done.
    current = state.get("stage", "")
    if current not in not_done:
        current = not_done[0] if not_done else ""
    out = {}
    for stage in STAGES:
        if stage not in not_done:
            out[stage] = "done"
        elif stage == current and status in ("running", "retrying", "failed"):
            out[stage] = status
        else:
            out[stage] = "cancelled" if status == "cancelled" else "pending"
    return out
