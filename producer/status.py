"""A batch's progress and leaderboard order, as data, read from the tracking records
(the CLI renders it: producer/cli/common.py)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from producer.provenance import ORIGIN_FIELDS
from workers.contracts import LOWER_IS_BETTER
from workers.runtime import Runtime
from workers.settings import STAGES
from workers.tracking import TERMINAL


@dataclass(frozen=True)
class ModelRow:
    name: str
    status: str
    stage: str
    metric: str | None
    value: float | None
    version: int | None
    promoted: bool
    reason: str
    error: str
    worker: str
    seconds: float | None
    # Every metric of the model (the primary one is `value`), for `leaderboard --metric`.
    metrics: dict[str, float] = field(default_factory=dict)
    # What the sweeper did to bring the model back (workers/recovery.py), if anything.
    recovered: str = ""
    # Seconds its stages took, each its last finished run (None: no stage finished, or a
    # model recorded before workers wrote `took_<stage>`).
    compute: float | None = None


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    name: str
    rows: list[ModelRow]
    counts: dict[str, int]
    stages_done: dict[str, int]
    elapsed: float
    eta: float | None
    done: bool = field(default=False)
    # Who submitted it, from which spec and commit (producer/provenance.py's fields).
    origin: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# What counting a batch's progress needs of each model's state (BatchStatus' counts,
# stages_done, done and eta; not the rows' metrics and reasons).
PROGRESS_FIELDS = ("status", "stage", "updated", *(f"done_{s}" for s in STAGES))


def batch_status(runtime: Runtime, batch_id: str, progress_only: bool = False,
                 record: dict[str, Any] | None = None) -> BatchStatus:
    """The batch's status; `progress_only` reads only PROGRESS_FIELDS of each model (a poll
    while it runs: its rows lack metrics, reasons and errors)."""
    record = record or runtime.tracker.get_batch(batch_id)
    if record is None:
        raise KeyError(f"no batch {batch_id!r}")
    fields = PROGRESS_FIELDS if progress_only else None
    return summarize(record, runtime.tracker.model_states(batch_id, record["models"], fields))


def summarize(record: dict[str, Any], states: dict[str, dict[str, str]]) -> BatchStatus:
    """The status of a batch from its record and its models' states (read by the caller,
    e.g. the batch page, which also needs the states themselves)."""
    metrics_of = _primary_metrics(record)
    rows = [_row(name, state, metrics_of.get(name), record["created"])
            for name, state in states.items()]
    counts = Counter(r.status for r in rows)
    stages_done = {s: sum(1 for st in states.values() if st.get(f"done_{s}")) for s in STAGES}
    finished = sum(counts[s] for s in TERMINAL)
    elapsed = time.time() - record["created"]
    eta = elapsed / finished * (len(rows) - finished) if 0 < finished < len(rows) else None
    return BatchStatus(record["id"], record["name"], rows, dict(counts), stages_done, elapsed, eta,
                       done=finished == len(rows),
                       origin={k: record[k] for k in ORIGIN_FIELDS if record.get(k) is not None})


def _primary_metrics(record: dict[str, Any]) -> dict[str, str]:
    """Each model's primary metric; stored in the batch record at submit time."""
    return dict(record.get("primary_metrics", {}))


def _row(name: str, state: dict[str, str], metric: str | None, created: float) -> ModelRow:
    metrics = json.loads(state["metrics"]) if state.get("metrics") else {}
    if metric is None and metrics:
        metric = next(iter(metrics))
    end = state.get("done_deploy") or (state.get("updated") if state.get("status") in TERMINAL else None)
    return ModelRow(
        name=name, status=state.get("status", "unknown"), stage=state.get("stage", ""),
        metric=metric, value=metrics.get(metric) if metric else None,
        version=int(state["version"]) if state.get("version") else None,
        promoted=state.get("promoted") == "1", reason=state.get("reason", ""),
        error=state.get("error", ""), worker=state.get("worker", ""),
        seconds=float(end) - created if end else None, metrics=metrics,
        recovered=state.get("recovered", ""), compute=_took(state))


def _took(state: dict[str, str]) -> float | None:
    took = [float(state[f"took_{s}"]) for s in STAGES if state.get(f"took_{s}")]
    return sum(took) if took else None


def ranked(rows: list[ModelRow]) -> list[ModelRow]:
    """Models best-first by their primary metric; those without a value last."""
    def rank(r: ModelRow) -> tuple[int, float]:
        if r.value is None:
            return (1, 0.0)
        return (0, r.value if r.metric in LOWER_IS_BETTER else -r.value)

    return sorted(rows, key=rank)
