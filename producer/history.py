"""What the history commands show, as plain data: a model's history, batch
comparisons, lineage and the targets of a bulk promote or rollback."""

from __future__ import annotations

import json
import math
from typing import Any

from producer.provenance import ORIGIN_FIELDS
from workers.contracts import LOWER_IS_BETTER, ChainState
from workers.runtime import Runtime
from workers.tracking import has_tags


def parse_tags(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`("region=eu", "family=tree")` -> a dict; a pair without `=` is a ValueError."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"tag {pair!r} must look like key=value")
        tags[key] = value
    return tags


def parse_age(text: str) -> float:
    """`7d`, `12h`, `30m`, `45s` or plain seconds -> seconds; not negative, nan or infinite
    (`cache prune --older-than -1d` would drop every entry)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    text = text.strip().lower()
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ValueError(f"{text!r} is not an age like 7d, 12h, 30m or 45s")
    return seconds


def _model_row(state: dict[str, str], primary: str | None) -> dict[str, Any]:
    return {"status": state.get("status", "unknown"),
            "version": int(state["version"]) if state.get("version") else None,
            "metrics": json.loads(state["metrics"]) if state.get("metrics") else {},
            "primary": primary, "error": state.get("error", "")}


def batch_models(runtime: Runtime, batch_id: str,
                 only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each model of a batch (or just `only`): status, version, metrics (from its state)."""
    record = runtime.tracker.get_batch(batch_id)
    if record is None:
        raise KeyError(f"no batch {batch_id!r}")
    names = [n for n in record["models"] if only is None or n in only]
    primary = record.get("primary_metrics", {})
    return {name: _model_row(st, primary.get(name))
            for name, st in runtime.tracker.model_states(batch_id, names).items()}


def page_runs(runtime: Runtime, limit: int, offset: int = 0, batch_id: str | None = None,
              model: str | None = None, status: str | None = None, stage: str | None = None,
              tags: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """A page of the matching runs, oldest first, skipping the `offset` newest; and how many match.

    Without filters beyond one index (a batch, a model or all runs) only the page is read;
    other filters read every run of the index and page after filtering.
    """
    tracker = runtime.tracker
    if not (status or stage or tags or (batch_id and model)):
        total = tracker.count_runs(batch_id, model)
        return tracker.runs(batch_id=batch_id, model=model, limit=limit, skip_newest=offset), total
    found = [r for r in tracker.runs(batch_id=batch_id, model=model, status=status, tags=tags,
                                     limit=10**9)
             if stage is None or r["stage"] == stage]
    end = max(len(found) - offset, 0)
    return found[max(end - limit, 0):end], len(found)


def compare(runtime: Runtime, batch_a: str, batch_b: str) -> list[dict[str, Any]]:
    """Per model (in either batch) and metric: value in A, value in B, change, better or worse."""
    return compare_sides(batch_models(runtime, batch_a), batch_models(runtime, batch_b))


def side(runtime: Runtime, ref: str, tags: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """What one side of `compare` names, as {model: {status, version, metrics}}.

    A batch id: its models (those with `tags`); `NAME/VERSION` or `NAME@ALIAS`: that version;
    a registered model's name: its latest version. KeyError if it names nothing.
    """
    if "/" not in ref and "@" not in ref and runtime.tracker.get_batch(ref) is not None:
        specs = runtime.tracker.model_specs(ref)
        return {n: m for n, m in batch_models(runtime, ref).items()
                if has_tags(specs.get(n, {}), tags)}
    try:
        record = runtime.registry.resolve(ref)
    except KeyError:
        if "/" in ref or "@" in ref:
            raise
        raise KeyError(f"{ref!r} is neither a batch id nor a model (NAME, NAME/VERSION or NAME@ALIAS)"
                       ) from None
    if not has_tags(record, tags):
        return {}
    return {record["name"]: {"status": f"version {record['version']}", "version": record["version"],
                             "metrics": record.get("metrics", {}), "primary": record.get("primary_metric"),
                             "error": ""}}


def compare_refs(runtime: Runtime, ref_a: str, ref_b: str,
                 tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`compare` for any two of: batches, model versions, models (see `side`)."""
    a, b = side(runtime, ref_a, tags), side(runtime, ref_b, tags)
    if len(a) == 1 and len(b) == 1 and set(a) != set(b):
        # Two different single models: one row per metric, named by both.
        (name_a, row_a), (name_b, row_b) = next(iter(a.items())), next(iter(b.items()))
        a, b = {f"{name_a} vs {name_b}": row_a}, {f"{name_a} vs {name_b}": row_b}
    return compare_sides(a, b)


def compare_sides(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model (on either side) and metric: value in A, value in B, change, better or worse."""
    rows = []
    for name in sorted(set(a) | set(b)):
        ma = a.get(name, {}).get("metrics", {})
        mb = b.get(name, {}).get("metrics", {})
        for metric in sorted(set(ma) | set(mb)) or [""]:
            va, vb = ma.get(metric), mb.get(metric)
            delta = vb - va if va is not None and vb is not None else None
            better = None if not delta else (delta < 0) == (metric in LOWER_IS_BETTER)
            rows.append({"model": name, "metric": metric, "a": va, "b": vb, "delta": delta,
                         "better": better,
                         "status_a": a.get(name, {}).get("status"),
                         "status_b": b.get(name, {}).get("status")})
    return rows


def model_history(runtime: Runtime, model: str) -> list[dict[str, Any]]:
    """One row per batch the model ran in: stages, cache hits, status, version, metrics."""
    by_batch: dict[str, list[dict[str, Any]]] = {}
    for run in runtime.tracker.runs(model=model):
        by_batch.setdefault(run["batch_id"], []).append(run)
    rows = []
    for batch_id, runs in by_batch.items():
        try:
            state = batch_models(runtime, batch_id, only=[model]).get(model, {})
        except KeyError:  # runs of a batch whose record is gone
            state = {}
        prepared = [r for r in runs if r["stage"] == "preprocess" and r["status"] == "succeeded"]
        rows.append({"batch_id": batch_id, "started": min(r["started"] for r in runs),
                     "runs": len(runs), "cache_hits": sum(1 for r in runs if r["cache_hit"]),
                     "failed_runs": sum(1 for r in runs if r["status"] == "failed"),
                     "status": state.get("status"), "version": state.get("version"),
                     "metrics": state.get("metrics", {}),
                     # Columns of the table no feature rule used: reported, never silently dropped.
                     "unused_columns": (prepared[-1].get("result") or {}).get("unused_columns", [])
                     if prepared else []})
    return sorted(rows, key=lambda r: r["started"])


def lineage(runtime: Runtime, ref: str) -> dict[str, Any]:
    """The chain that produced a registered version, from its record, runs and batch."""
    record = runtime.registry.resolve(ref)
    if "lineage" not in record:
        raise KeyError(f"{ref} was registered without a lineage (not by a deploy stage)")
    chain = ChainState.model_validate(record["lineage"])
    model, prepared, trained, evaluated = chain.job.model, chain.prepared, chain.trained, chain.evaluated
    assert prepared is not None and trained is not None and evaluated is not None
    batch = runtime.tracker.get_batch(record["batch_id"]) or {}
    # The model's index, not the batch's: a report of a 1,000-model batch reads lineages by the thousand.
    deploy_runs = [r["id"] for r in runtime.tracker.runs(model=model.name)
                   if r["batch_id"] == record["batch_id"] and r["stage"] == "deploy"
                   and (r.get("result") or {}).get("version") == record["version"]]
    info = {
        "ref": ref, "name": record["name"], "version": record["version"],
        "aliases": sorted(a for a, v in runtime.registry.aliases(record["name"]).items()
                          if v == record["version"]),
        "created": record["created"], "batch_id": record["batch_id"],
        **{k: batch.get(k) for k in ORIGIN_FIELDS}, "task": model.task,
        "dataset": model.dataset.model_dump(mode="json"), "dataset_digest": prepared.dataset_digest,
        "preprocess": model.preprocess.model_dump(mode="json"), "data_digest": prepared.data_digest,
        "features": model.features.model_dump(mode="json", exclude_defaults=True),
        "split": model.split.model_dump(mode="json", exclude_defaults=True),
        "cv": None if model.cv is None else model.cv.model_dump(mode="json"),
        "unused_columns": prepared.unused_columns,
        "transform_digest": prepared.transform_digest,
        "estimator": model.estimator.class_path, "estimator_params": model.estimator.params,
        "model_digest": trained.model_digest, "report_digest": evaluated.report_digest,
        "metrics": record["metrics"], "tags": record.get("tags", {}),
        "stage_versions": record.get("stage_versions", {}), "libraries": record.get("libraries", {}),
        "run_ids": {"preprocess": prepared.run_id, "train": trained.run_id,
                    "evaluate": evaluated.run_id, "deploy": deploy_runs[0] if deploy_runs else None},
        "decision": record.get("decision"),
    }
    if trained.search is not None:
        # What the model was fitted with: the search's winner over the spec's values.
        info["spec_params"] = model.estimator.params
        info["estimator_params"] = {**model.estimator.params, **trained.search.best_params}
        info["search"] = trained.search.model_dump(mode="json")
        train_run = runtime.tracker.get_run(trained.run_id) or {}
        info["search_trials"] = ((train_run.get("result") or {}).get("search") or {}).get("trials", [])
    return info


def bulk_targets(runtime: Runtime, batch_id: str | None,
                 tags: dict[str, str] | None) -> list[tuple[str, int]]:
    """(name, version) pairs for a batch (the versions it deployed) or a tag (latest versions)."""
    if batch_id is not None:
        return sorted((n, m["version"]) for n, m in batch_models(runtime, batch_id).items()
                      if m["version"] is not None and has_tags(_latest(runtime, n), tags))
    out = []
    for name in runtime.registry.names(tags):
        out.append((name, int(_latest(runtime, name)["version"])))
    return out


def _latest(runtime: Runtime, name: str) -> dict[str, Any]:
    versions = runtime.registry.versions(name)
    return versions[-1] if versions else {}


# The stage of the runs `modelfleet evaluate` records (producer/monitor.py): one per model checked.
MONITOR_STAGE = "monitor"


def monitor_runs(runtime: Runtime, name: str, limit: int = 50) -> list[dict[str, Any]]:
    """The model's checks on new labelled rows, newest first: its drift over time."""
    runs = [r for r in runtime.tracker.runs(model=name) if r.get("stage") == MONITOR_STAGE]
    return sorted(runs, key=lambda r: -r["started"])[:limit]
