"""Deployed models, watched: each production model's metrics on new labelled rows, beside
the metrics it was registered with, and a flag where its error grew past a tolerance.

Every check is recorded as a run (stage `monitor`, one per model), so `modelfleet runs
--model store-8` shows a segment's drift over time and `report` draws it.
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from producer.history import MONITOR_STAGE as STAGE
from producer.leaderboard import lower_is_better
from producer.segments import predict_frame
from producer.serving import MODEL, PREDICTION
from producer.spec import Batch, segment_model_name
from workers.contracts import ChainState, CsvDataset, ModelSpec
from workers.pipeline.evaluate import score
from workers.runtime import Runtime

DEFAULT_TOLERANCE = 1.5


@dataclass(frozen=True)
class Check:
    """One model (a segment's, or the only one) on the new rows."""

    segment: str | None
    model: str  # NAME/VERSION, or the name a segment would have (no model)
    rows: int
    metric: str  # the one compared: the model's gate metric unless asked otherwise
    registered: dict[str, float]  # what the version was registered (and promoted) with
    now: dict[str, float]  # on the new rows
    ratio: float | None  # new error / registered error (error: the metric, or 1 - it if higher is better)
    flagged: bool
    note: str = ""  # why there is no check (no model at the alias, no target values)
    run_id: str | None = None


@dataclass(frozen=True)
class Evaluation:
    id: str
    ref: str
    source: str
    tolerance: float
    checks: list[Check] = field(default_factory=list)

    @property
    def flagged(self) -> list[Check]:
        return [c for c in self.checks if c.flagged]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": [c.model for c in self.flagged]}


def error(metric: str, value: float) -> float:
    """A metric as an error (lower is better): itself, or 1 - it (accuracy, r2)."""
    return value if lower_is_better(metric) else 1.0 - value


def evaluate(ref: str, frame: pd.DataFrame, runtime: Runtime, segment_by: str | None = None,
             tolerance: float = DEFAULT_TOLERANCE, metric: str | None = None, source: str = "") -> Evaluation:
    """Predict `frame` with `ref` (per segment with `segment_by`), score each model on its rows
    against the target its dataset names, flag those whose error grew more than `tolerance`
    times, and record one run per model checked. ValueError for rows without the target."""
    predicted = predict_frame(ref, frame, runtime, segment_by)
    out = predicted.frame
    if MODEL not in out.columns:  # one model: every row is its
        record = runtime.registry.resolve(ref)
        out = out.assign(**{MODEL: f"{record['name']}/{record['version']}"})
    evaluation_id = f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    checks = []
    for model_ref, rows in out.groupby(MODEL, sort=False).groups.items():
        record = runtime.registry.resolve(str(model_ref))
        checks.append(_check(record, out.loc[rows], segment_by, tolerance, metric))
    family = ref.partition("@")[0]
    checks += [Check(value, segment_model_name(family, value), n, metric or "", {}, {}, None, False,
                     note=f"no model at {ref}") for value, n in predicted.unknown.items()]
    checks += [Check(value, u.model, u.rows, metric or "", {}, {}, None, False,
                     note=f"at {ref}: {u.describe()}") for value, u in predicted.unpromoted.items()]
    recorded = [_record(runtime, evaluation_id, ref, source, tolerance, c) if c.now else c for c in checks]
    return Evaluation(evaluation_id, ref, source, tolerance, recorded)


def _check(record: dict[str, Any], rows: pd.DataFrame, segment_by: str | None, tolerance: float,
           wanted: str | None) -> Check:
    spec = ChainState.model_validate(record["lineage"]).job.model
    target = spec.dataset.target if isinstance(spec.dataset, CsvDataset) else None
    ref = f"{record['name']}/{record['version']}"
    segment = str(rows[segment_by].iloc[0]) if segment_by else None
    if target is None or target not in rows.columns:
        raise ValueError(f"the labelled rows have no column {target!r}, the target of {ref}")
    labelled = rows[rows[target].notna()]
    metric = wanted or spec.gate_metric
    if labelled.empty:
        return Check(segment, ref, 0, metric, record.get("metrics", {}), {}, None, False,
                     note=f"no {target} values")
    names = list(spec.evaluation.metrics)
    now = score(labelled[target].to_numpy(), labelled[PREDICTION].to_numpy(), names)
    registered = dict(record.get("metrics", {}))
    if metric not in now or metric not in registered:
        raise ValueError(f"{ref} was not evaluated on {metric!r}; its metrics are {names}")
    before, after = error(metric, registered[metric]), error(metric, now[metric])
    ratio = after / before if before > 0 else None
    flagged = after > tolerance * before
    return Check(segment, ref, len(labelled), metric, registered, now, ratio, flagged)


def _record(runtime: Runtime, evaluation_id: str, ref: str, source: str, tolerance: float,
            check: Check) -> Check:
    """The check as a run of its model: `runs` lists it, `report` draws the history."""
    name, _, version = check.model.partition("/")
    record = runtime.registry.version(name, int(version))
    now = time.time()
    run_id = runtime.tracker.record_run({
        "batch_id": evaluation_id, "model": name, "stage": STAGE, "status": "succeeded",
        "params": {"ref": ref, "data": source, "tolerance": tolerance, "metric": check.metric},
        "inputs": [], "outputs": [], "cache_key": None, "cache_hit": False, "started": now,
        "finished": now, "duration": 0.0, "error": "", "worker": socket.gethostname(),
        "tags": record.get("tags", {}),
        "metrics": check.now,
        "result": {"version": int(version), "rows": check.rows, "registered": check.registered,
                   "ratio": check.ratio, "flagged": check.flagged, "segment": check.segment}})
    return Check(**{**asdict(check), "run_id": run_id})


def retrain_batch(evaluation: Evaluation, labelled: pd.DataFrame, runtime: Runtime) -> Batch:
    """A batch of the flagged models only, each with its spec as trained and its data file
    grown by the labelled rows (a new file under the data root; the user's files are never
    written), so train, evaluate and the gate decide again. ValueError if nothing is flagged."""
    flagged = evaluation.flagged
    if not flagged:
        raise ValueError(f"no model of {evaluation.ref} is flagged: nothing to retrain")
    data_root = runtime.settings.data_root
    grown: dict[str, str] = {}  # original path -> the grown file's path (relative to the data root)
    models: list[ModelSpec] = []
    for check in flagged:
        name, _, version = check.model.partition("/")
        spec = ChainState.model_validate(runtime.registry.version(name, int(version))["lineage"]).job.model
        ds = spec.dataset
        if not isinstance(ds, CsvDataset):
            raise ValueError(f"{check.model} was trained on a {ds.kind} dataset, not a file to add rows to")
        if ds.path not in grown:
            grown[ds.path] = _grow(ds, labelled, data_root)
        models.append(spec.model_copy(update={"dataset": ds.model_copy(update={"path": grown[ds.path]})}))
    family = evaluation.ref.partition("@")[0]
    name = f"{family}-retrain"[:60].strip("-")
    source = yaml.safe_dump({"name": name, "evaluation": evaluation.id,
                             "models": [m.model_dump(mode="json") for m in models]}, sort_keys=False)
    return Batch(name=name, models=models, source=source, path="")


def _grow(ds: CsvDataset, labelled: pd.DataFrame, data_root: Path) -> str:
    """The dataset's file with the labelled rows appended (its columns, duplicates dropped),
    written once under `<data root>/.modelfleet/retrain/` by content; its relative path."""
    from workers.pipeline.data import read_table, resolve_csv_path

    table = read_table(ds, data_root)
    missing = [c for c in table.columns if c not in labelled.columns]
    if missing:
        raise ValueError(f"the labelled rows lack the columns {missing} of {ds.path}")
    new = labelled[list(table.columns)].astype({ds.segment_by: str} if ds.segment_by else {})
    grown = pd.concat([table, new], ignore_index=True).drop_duplicates(ignore_index=True)
    body = grown.to_csv(index=False).encode()
    original = resolve_csv_path(data_root, ds.path)
    digest = hashlib.sha256(body).hexdigest()[:12]
    relative = Path(".modelfleet") / "retrain" / f"{original.stem}-{digest}.csv"
    target = data_root / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(body)
        tmp.replace(target)
    return str(relative)
