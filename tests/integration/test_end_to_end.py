"""Real batches through real celery workers over a real redis-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from producer.status import batch_status
from tests.conftest import load, run_batch, write_spec
from tests.support.processes import run_cli
from workers.app import queue_lists
from workers.settings import STAGES, Settings

pytestmark = pytest.mark.integration


def classifier(name: str, dataset: str, class_path: str, **params: Any) -> dict[str, Any]:
    return {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": dataset},
            "estimator": {"class_path": class_path, "params": params},
            "evaluation": {"metrics": ["accuracy", "f1_macro"]}}


def test_batch_completes_across_both_workers(tmp_path: Path, settings: Settings, workers: Any,
                                             app: Any, runtime: Any, uniq: str) -> None:
    models = [classifier(f"{d}-{e}-{uniq}", d, cp, **p)
              for d in ("iris", "wine", "breast_cancer")
              for e, cp, p in (("lr", "sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
                               ("rf", "sklearn.ensemble.RandomForestClassifier",
                                {"n_estimators": 50, "random_state": 0}))]
    batch = load(tmp_path, {"name": f"e2e-{uniq}", "models": models}, settings)
    handle, status = run_batch(batch, app, runtime)

    assert status.counts == {"promoted": 6}
    rows = {r.name: r for r in status.rows}
    assert rows[f"iris-lr-{uniq}"].value is not None and rows[f"iris-lr-{uniq}"].value > 0.8
    assert all(r.version == 1 and r.promoted for r in rows.values())
    runs = runtime.tracker.runs(batch_id=handle.batch_id)
    assert sorted({r["stage"] for r in runs}) == sorted(STAGES) and len(runs) == 24
    assert {r["worker"] for r in runs} == set(workers.names), "both workers should have worked"
    for name in rows:
        version = runtime.registry.resolve(f"{name}@production")
        assert version["version"] == 1 and version["batch_id"] == handle.batch_id


def test_failing_model_fails_alone(tmp_path: Path, settings: Settings, workers: Any, app: Any,
                                   runtime: Any, uniq: str) -> None:
    # More neighbours than training rows: fit succeeds, predict (in evaluate) raises.
    bad = classifier(f"bad-{uniq}", "iris", "sklearn.neighbors.KNeighborsClassifier",
                     n_neighbors=1000)
    good = [classifier(f"good{i}-{uniq}", "wine", "sklearn.linear_model.LogisticRegression",
                       max_iter=1000, C=0.5 + i) for i in range(3)]
    batch = load(tmp_path, {"name": f"fail-{uniq}", "models": [bad, *good]}, settings)
    _, status = run_batch(batch, app, runtime)

    assert status.counts == {"promoted": 3, "failed": 1}
    failed = next(r for r in status.rows if r.status == "failed")
    assert failed.name == f"bad-{uniq}" and failed.stage == "evaluate"
    assert "n_neighbors" in failed.error or "n_samples" in failed.error
    # What a poll reads (a few fields a model) counts the same as the whole status.
    polled = batch_status(runtime, status.batch_id, progress_only=True)
    assert (polled.counts, polled.stages_done, polled.done) == (status.counts, status.stages_done, True)
    assert polled.rows[0].metrics == {} and any(r.metrics for r in status.rows)


def test_walmart_one_model_per_store(tmp_path: Path, settings: Settings, workers: Any, app: Any,
                                     runtime: Any, uniq: str) -> None:
    spec = {"name": f"walmart-{uniq}", "models": [{
        "name": f"store-{uniq}", "task": "regression",
        "dataset": {"kind": "csv", "path": "walmart_weekly_sales.csv", "target": "Weekly_Sales",
                    "segment_by": "Store"},
        "estimator": {"class_path": "sklearn.ensemble.RandomForestRegressor",
                      "params": {"n_estimators": 30, "random_state": 0}},
        "evaluation": {"metrics": ["r2", "mae"], "primary": "mae"}}]}
    batch = load(tmp_path, spec, settings)
    assert len(batch.models) == 45
    _, status = run_batch(batch, app, runtime, timeout=300)
    assert status.counts == {"promoted": 45}
    assert all(r.metric == "mae" and r.value is not None and r.value > 0 for r in status.rows)


def test_invalid_spec_is_refused_and_nothing_is_enqueued(tmp_path: Path, settings: Settings,
                                                         runtime: Any, uniq: str) -> None:
    bad = classifier(f"typo-{uniq}", "iris", "sklearn.linear_model.LogisticRegression")
    bad["estimator"]["paramz"] = {}
    ok = classifier(f"fine-{uniq}", "iris", "sklearn.linear_model.LogisticRegression")
    path = write_spec(tmp_path, {"name": f"bad-{uniq}", "models": [ok, bad]})
    batches_before = runtime.tracker.list_batches(limit=10_000)

    result = run_cli(["submit", str(path)], settings, tmp_path)

    assert result.returncode != 0
    assert f"typo-{uniq}" in result.stderr and "estimator.paramz" in result.stderr
    assert "batch.yaml" in result.stderr and "Traceback" not in result.stderr
    assert all(runtime.redis.llen(q) == 0 for s in STAGES for q in queue_lists(s))
    assert runtime.tracker.list_batches(limit=10_000) == batches_before


def test_a_300_character_batch_name_exits_2_and_writes_nothing(tmp_path: Path, settings: Settings,
                                                               runtime: Any, uniq: str) -> None:
    """Issue 10, point 7: a 300-character batch name (dots between short segments) passed
    validation, recorded the batch in Redis, then failed writing its spec file: a traceback
    and a ghost batch. (Markup in names and NaN thresholds: tests/unit/test_spec_hostile.py.)"""
    name = f"b{uniq}" + ".x" * 147
    model = classifier(f"m-{uniq}", "iris", "sklearn.linear_model.LogisticRegression")
    path = write_spec(tmp_path, {"name": name, "models": [model]})
    batches_before = runtime.tracker.list_batches(limit=10_000)

    result = run_cli(["submit", str(path)], settings, tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "invalid batch spec" in result.stderr
    assert str(path) in result.stderr and "field 'name'" in result.stderr
    assert all(runtime.redis.llen(q) == 0 for s in STAGES for q in queue_lists(s))
    assert runtime.tracker.list_batches(limit=10_000) == batches_before
    assert not list((settings.artifact_root / "specs").glob(f"b{uniq}*"))


def test_cli_submit_wait_and_status(tmp_path: Path, settings: Settings, workers: Any,
                                    uniq: str) -> None:
    path = write_spec(tmp_path, {"name": f"cli-{uniq}", "models": [
        classifier(f"cli-{uniq}", "iris", "sklearn.tree.DecisionTreeClassifier", max_depth=3)]})
    result = run_cli(["submit", str(path), "--wait", "--timeout", "120"], settings, tmp_path)
    assert result.returncode == 0, result.stderr
    batch_id = result.stdout.split("submitted batch ")[1].split()[0]
    status = run_cli(["status", batch_id, "--json"], settings, tmp_path)
    assert status.returncode == 0 and '"promoted": 1' in status.stdout


def test_cli_submit_wait_shows_a_big_batchs_best_and_says_where_the_rest_are(
        tmp_path: Path, settings: Settings, workers: Any, uniq: str) -> None:
    models = [classifier(f"big{i}-{uniq}", "iris", "sklearn.tree.DecisionTreeClassifier",
                         max_depth=1 + i % 4, random_state=i) for i in range(101)]
    path = write_spec(tmp_path, {"name": f"big-{uniq}", "models": models})
    result = run_cli(["submit", str(path), "--wait", "--timeout", "240"], settings, tmp_path)
    assert result.returncode == 0, result.stderr
    batch_id = result.stdout.split("submitted batch ")[1].split()[0]
    assert "50 of 101 models" in result.stdout
    assert f"every model: modelfleet leaderboard {batch_id}" in result.stdout
    shown = [f"big{i}-{uniq}" for i in range(101) if f"big{i}-{uniq} " in result.stdout]
    assert len(shown) == 50
