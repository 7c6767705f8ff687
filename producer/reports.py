"""What a model report and a batch report show, as plain data (producer/cli/report.py draws
the PNGs and writes the HTML): metrics with their cross-validation spread, the evaluation's
plot data, lineage, and each stage's cost."""

from __future__ import annotations

from typing import Any

from producer import history, leaderboard
from workers.runtime import Runtime


def model_report(runtime: Runtime, ref: str) -> dict[str, Any]:
    """A registered version's report data; KeyError if `ref` names no version."""
    record = runtime.registry.resolve(ref)
    name, version = record["name"], int(record["version"])
    lineage = history.lineage(runtime, f"{name}/{version}")
    evaluation = runtime.store.get_json(lineage["report_digest"])
    runs = {stage: run for stage, run_id in lineage["run_ids"].items()
            if run_id and (run := runtime.tracker.get_run(run_id)) is not None}
    spec = runtime.tracker.model_spec(lineage["batch_id"], name)
    metrics: dict[str, float] = {}
    for run in runs.values():  # train may hold cross-validation scores, evaluate the test scores
        metrics.update(run.get("metrics") or {})
    metrics.update(record.get("metrics", {}))
    cv = cv_spread(metrics)
    search, trials = lineage.get("search"), lineage.get("search_trials") or []
    if search and trials and search["metric"] not in cv:  # the search's best trial, over its folds
        cv[search["metric"]] = {"mean": trials[0]["mean"], "std": trials[0]["std"]}
    return {"ref": f"{name}/{version}", "name": name, "version": version,
            "aliases": lineage["aliases"], "task": lineage["task"],
            "primary_metric": record.get("primary_metric"),
            "metrics": {k: v for k, v in metrics.items() if not k.startswith("cv_")},
            "cv": cv, "n_test": evaluation.get("n_test"),
            "plots": evaluation.get("plots"), "lineage": lineage, "spec": spec,
            "stage_seconds": {stage: run.get("duration") for stage, run in runs.items()},
            "cache_hits": sorted(stage for stage, run in runs.items() if run.get("cache_hit")),
            "monitoring": [_check(r) for r in history.monitor_runs(runtime, name)]}


def _check(run: dict[str, Any]) -> dict[str, Any]:
    """A recorded `evaluate` check of the model, as the report lists it."""
    result, params = run.get("result") or {}, run.get("params") or {}
    metric = params.get("metric")
    return {"when": run["started"], "version": result.get("version"), "data": params.get("data"),
            "rows": result.get("rows"), "metric": metric,
            "registered": (result.get("registered") or {}).get(metric),
            "now": (run.get("metrics") or {}).get(metric), "ratio": result.get("ratio"),
            "tolerance": params.get("tolerance"), "flagged": bool(result.get("flagged")),
            "evaluation": run["batch_id"]}


def cv_spread(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """`cv_<m>_mean` and `cv_<m>_std` pairs as {m: {mean, std}} (a mean alone has std None)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if key.startswith("cv_") and key.endswith("_mean"):
            core = key[3:-5]
            out[core] = {"mean": value, "std": metrics.get(f"cv_{core}_std")}
    return out


def batch_report(runtime: Runtime, batch_id: str, top: int | None = None) -> dict[str, Any]:
    """A batch's models ranked per task and metric (see producer.leaderboard), with its record."""
    status, found = leaderboard.entries(runtime, batch_id)
    record = runtime.tracker.get_batch(batch_id) or {}
    return {"batch_id": batch_id, "name": status.name, "counts": status.counts,
            "created": record.get("created"), "origin": status.origin,
            "submitted_by": record.get("submitted_by"),
            "git_commit": record.get("git_commit"), "spec_path": record.get("spec_path"),
            "sections": leaderboard.sections(found, top=top)}
