"""A batch's leaderboard as data: one section per task and metric, each ranked in its
metric's own direction, with every model's compute time (its stage runs summed) beside
the time it waited. The CLI renders it (producer/cli/runs.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from producer.status import BatchStatus, ModelRow, batch_status
from workers.contracts import CLASSIFICATION_METRICS, LOWER_IS_BETTER, REGRESSION_METRICS
from workers.runtime import Runtime

SORTS = ("metric", "compute", "queue", "done", "name")
_TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}


def lower_is_better(metric: str) -> bool:
    """`mae`, `rmse`, `mape`, and their cross-validated `cv_<m>_mean`; any `*_std` (a spread)."""
    core = metric.removeprefix("cv_").removesuffix("_mean")
    return core in LOWER_IS_BETTER or metric.endswith("_std")


@dataclass(frozen=True)
class Entry:
    """One model's line: its metric value, state, tags and what it cost."""

    name: str
    task: str
    metric: str | None
    value: float | None
    status: str
    version: int | None
    promoted: bool
    error: str
    worker: str
    tags: dict[str, str]
    metrics: dict[str, float]
    compute_seconds: float  # the model's stages, each its last finished run (cache hits cost almost nothing)
    done_seconds: float | None  # from submit to the model's end (its place in the queue)
    queue_seconds: float | None  # done - compute: the time it waited for a worker
    reason: str = ""  # why a registered model was not promoted (its gate's decision)


@dataclass(frozen=True)
class Section:
    """The models of one task ranked by one metric; `total` counts them before --top/--best-per."""

    task: str
    metric: str
    lower_is_better: bool
    total: int
    rows: list[Entry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def entries(runtime: Runtime, batch_id: str, metric: str | None = None,
            tags: dict[str, str] | None = None, status: BatchStatus | None = None,
            ) -> tuple[BatchStatus, list[Entry]]:
    """Every model of the batch (with all the tags in `tags`) as an Entry; KeyError if no batch.

    Reads the batch record and the model states (unless `status` holds them) and the
    specs: a few pipelined round trips whatever the number of models.
    """
    status = status or batch_status(runtime, batch_id)
    specs = runtime.tracker.model_specs(batch_id)
    compute = {row.name: row.compute for row in status.rows if row.compute is not None}
    if len(compute) < len(status.rows):
        # A model that finished no stage, or a batch from before the states held their
        # stages' times: its run records (all of the batch's: 0.6 s for 3,000 models).
        runs: dict[str, float] = defaultdict(float)
        for run in runtime.tracker.runs(batch_id=batch_id, limit=10**9):
            runs[run["model"]] += float(run.get("duration") or 0.0)
        compute = {row.name: compute.get(row.name, runs[row.name]) for row in status.rows}
    wanted = tags or {}
    out = []
    for row in status.rows:
        spec = specs.get(row.name, {})
        mine = spec.get("tags") or {}
        if any(mine.get(k) != v for k, v in wanted.items()):
            continue
        out.append(_entry(row, spec.get("task") or _task_of(row.metric), mine, metric,
                          compute.get(row.name, 0.0)))
    return status, out


def _task_of(metric: str | None) -> str:
    # Batches recorded before the specs were kept: the metric tells the task.
    return "regression" if metric in REGRESSION_METRICS else "classification"


def _entry(row: ModelRow, task: str, tags: dict[str, str], wanted: str | None,
           compute: float) -> Entry:
    metric, value = row.metric, row.value
    # --metric applies where the model has it or where it is one of its task's metrics
    # (missing then, e.g. a failed model); other tasks keep their primary metric.
    if wanted and (wanted in row.metrics or wanted in _TASK_METRICS.get(task, ())):
        metric, value = wanted, row.metrics.get(wanted)
    queue = max(row.seconds - compute, 0.0) if row.seconds is not None else None
    return Entry(name=row.name, task=task, metric=metric, value=value, status=row.status,
                 version=row.version, promoted=row.promoted, error=row.error, worker=row.worker,
                 tags=tags, metrics=row.metrics, compute_seconds=compute, done_seconds=row.seconds,
                 queue_seconds=queue, reason=row.reason)


def sections(found: list[Entry], sort: str = "metric", top: int | None = None,
             best_per: str | None = None, group_by: str | None = None) -> list[Section]:
    """One Section per (task, metric), best first in that metric's direction.

    `best_per KEY` keeps each value of the tag's best model; `group_by KEY` orders rows by the
    tag's value first (one table, not one per value); `top N` keeps the first N of each
    section (of each group with `group_by`). `sort` re-orders by compute, queue or done time
    (largest first) or name; models without a value stay last.
    """
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, not {sort!r}")
    by_section: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in found:
        by_section[(e.task, e.metric or "")].append(e)
    out = []
    for (task, metric), rows in sorted(by_section.items()):
        lower = lower_is_better(metric)
        rows = sorted(rows, key=_by_metric(lower))
        if best_per:
            best: dict[str, Entry] = {}
            for e in rows:  # best first: the first of each value is its best
                best.setdefault(e.tags.get(best_per, "-"), e)
            rows = list(best.values())
        if sort != "metric":
            rows = sorted(rows, key=_SORT_KEYS[sort])
        if group_by:
            rows = sorted(rows, key=lambda e: e.tags.get(group_by, "\uffff"))  # stable: rank kept
        if top is not None:
            rows = _first_per_group(rows, top, group_by)
        out.append(Section(task, metric, lower, len(by_section[(task, metric)]), rows))
    return out


def _by_metric(lower: bool) -> Callable[[Entry], tuple[int, float, str]]:
    def key(e: Entry) -> tuple[int, float, str]:
        if e.value is None:
            return (1, 0.0, e.name)
        return (0, e.value if lower else -e.value, e.name)
    return key


_SORT_KEYS: dict[str, Callable[[Entry], Any]] = {
    "compute": lambda e: -e.compute_seconds,
    "queue": lambda e: -(e.queue_seconds or 0.0),
    "done": lambda e: -(e.done_seconds or 0.0),
    "name": lambda e: e.name,
}


def _first_per_group(rows: list[Entry], top: int, group_by: str | None) -> list[Entry]:
    kept: list[Entry] = []
    seen: dict[str, int] = defaultdict(int)
    for e in rows:
        group = e.tags.get(group_by, "-") if group_by else ""
        if seen[group] < top:
            seen[group] += 1
            kept.append(e)
    return kept
