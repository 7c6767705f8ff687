"""Meta-estimators and hyperparameter search through real workers: trained, deployed, served,
and their search visible in the run record and in `modelfleet lineage`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

from producer.serving import load_deployed
from tests.conftest import load, run_batch
from tests.support.processes import run_cli
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def est(class_path: str, **params: Any) -> dict[str, Any]:
    return {"class_path": class_path, "params": params}


SCALER = est("sklearn.preprocessing.StandardScaler")
TREE = est("sklearn.tree.DecisionTreeClassifier", max_depth=3, random_state=0)
KNN = est("sklearn.neighbors.KNeighborsClassifier")
LOGREG_PIPE = est("sklearn.pipeline.Pipeline", steps=[
    ["scale", SCALER], ["model", est("sklearn.linear_model.LogisticRegression", max_iter=300)]])


def model(name: str, estimator: dict[str, Any], task: str = "classification", **extra: Any) -> dict[str, Any]:
    dataset = "iris" if task == "classification" else "diabetes"
    metrics = ["accuracy"] if task == "classification" else ["r2", "mae"]
    return {"name": name, "task": task, "dataset": {"kind": "sklearn", "name": dataset},
            "estimator": estimator, "evaluation": {"metrics": metrics}, **extra}


def test_meta_estimators_and_searches_train_deploy_and_serve(
        tmp_path: Path, settings: Settings, workers: Any, app: Any, runtime: Runtime, uniq: str) -> None:
    models = [
        model(f"pipe-{uniq}", LOGREG_PIPE),
        model(f"vote-{uniq}", est("sklearn.ensemble.VotingClassifier",
                                  estimators=[["knn", KNN], ["tree", TREE]], voting="soft")),
        model(f"stack-{uniq}", est("sklearn.ensemble.StackingRegressor", cv=3, estimators=[
            ["ridge", est("sklearn.linear_model.Ridge")],
            ["tree", est("sklearn.tree.DecisionTreeRegressor", max_depth=3, random_state=0)]],
            final_estimator=est("sklearn.linear_model.LinearRegression")), task="regression"),
        model(f"ovr-{uniq}", est("sklearn.multiclass.OneVsRestClassifier", estimator=LOGREG_PIPE)),
        model(f"gscv-{uniq}", est("sklearn.model_selection.GridSearchCV", estimator=TREE, cv=3,
                                  param_grid={"max_depth": [1, 3]})),
        model(f"grid-{uniq}", LOGREG_PIPE, search={"space": {"model__C": [0.01, 1.0, 10.0]}, "cv": 3}),
        model(f"rand-{uniq}", est("sklearn.linear_model.Ridge"), task="regression",
              search={"kind": "random", "space": {"alpha": [0.01, 0.1, 1.0, 10.0]}, "n_iter": 3,
                      "cv": 3, "metric": "mae"}),
        # A time split: the search's folds must be time-ordered too (no future weeks in them).
        {"name": f"weeks-{uniq}", "task": "regression", "evaluation": {"metrics": ["mae"]},
         "dataset": {"kind": "csv", "path": "walmart_weekly_sales.csv", "target": "Weekly_Sales",
                     "segment_by": "Store", "segment": "3"},
         "features": {"dates": {"columns": ["Date"], "format": "%d-%m-%Y", "parts": ["year", "week"]}},
         "split": {"kind": "time", "time_column": "Date", "test_size": 0.1},
         "estimator": est("sklearn.linear_model.Ridge"), "search": {"space": {"alpha": [0.1, 10.0]}}},
    ]
    batch = load(tmp_path, {"name": f"meta-{uniq}", "models": models}, settings)
    handle, status = run_batch(batch, app, runtime)

    # Every meta-estimator trained, evaluated and deployed; each serves raw rows.
    assert status.counts == {"promoted": len(models)}, [(r.name, r.error) for r in status.rows]
    X, y = load_iris(return_X_y=True)
    Xr, yr = load_diabetes(return_X_y=True)
    for m in models:
        deployed = load_deployed(m["name"], runtime)
        if m["dataset"]["kind"] != "sklearn":
            continue
        score = deployed.estimator.score(*((X, y) if m["task"] == "classification" else (Xr, yr)))
        assert score > (0.8 if m["task"] == "classification" else 0.3), (m["name"], score)

    # A search deploys its best candidate refitted (not the search object) ...
    runs = {(r["model"], r["stage"]): r for r in runtime.tracker.runs(batch_id=handle.batch_id)}
    grid = runs[(f"grid-{uniq}", "train")]["result"]["search"]
    best_c = grid["best_params"]["model__C"]
    assert grid["n_trials"] == 3 and len(grid["trials"]) == 3 and grid["metric"] == "accuracy"
    assert grid["trials"][0]["params"] == {"model__C": best_c} and grid["seconds"] > 0
    served = load_deployed(f"grid-{uniq}", runtime).estimator.named_steps["estimator"]
    assert type(served).__name__ == "Pipeline" and served.named_steps["model"].get_params()["C"] == best_c
    # ... scored by its own metric, in that metric's units (an error: lowest first).
    rand = runs[(f"rand-{uniq}", "train")]["result"]["search"]
    assert rand["metric"] == "mae" and rand["n_trials"] == 3 and rand["kind"] == "RandomizedSearchCV"
    assert [t["mean"] for t in rand["trials"]] == sorted(t["mean"] for t in rand["trials"])
    assert "search" not in runs[(f"pipe-{uniq}", "train")]["result"]
    assert grid["cv"] == 3 and runs[(f"weeks-{uniq}", "train")]["result"]["search"]["cv"] == "time_series:3"

    # `lineage` shows the search: summary and trial table, in JSON and in the table.
    out = run_cli(["lineage", f"grid-{uniq}@production", "--json"], settings, tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["search"]["best_params"] == {"model__C": best_c}
    assert info["search"]["n_trials"] == 3 and info["search_trials"] == grid["trials"]
    # What the model was fitted with is the winner, not the spec's value; the spec's stays beside it.
    assert info["estimator_params"]["model__C"] == best_c and info["spec_params"] == LOGREG_PIPE["params"]
    alpha = runs[(f"rand-{uniq}", "train")]["result"]["search"]["best_params"]["alpha"]
    rand_info = json.loads(run_cli(["lineage", f"rand-{uniq}@production", "--json"], settings,
                                   tmp_path).stdout)
    assert rand_info["estimator_params"] == {"alpha": alpha} and rand_info["spec_params"] == {}
    table = run_cli(["lineage", f"grid-{uniq}@production"], settings, tmp_path)
    assert table.returncode == 0 and "search_trials" in table.stdout and "#1 " in table.stdout
    assert np.isclose(info["search"]["best_score"], grid["trials"][0]["mean"])
