"""Feature pipelines, a time-ordered split and CV through real workers on the Walmart table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from producer.history import model_history
from producer.serving import load_model
from tests.conftest import EXAMPLE_DATA, load, run_batch
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORES = ("3", "17", "44")
HELD_OUT = 0.1  # of 143 weeks: the last 15


def store_model(name: str, store: str, gate: float) -> dict[str, Any]:
    return {
        "name": name, "task": "regression",
        "dataset": {"kind": "csv", "path": "walmart_weekly_sales.csv", "target": "Weekly_Sales",
                    "segment_by": "Store", "segment": store},
        # CPI is left out on purpose: it must be reported as unused, not dropped silently.
        "features": {"numeric": {"columns": ["Temperature", "Fuel_Price", "Unemployment"]},
                     "categorical": {"columns": ["Holiday_Flag"]},
                     "dates": {"columns": ["Date"], "format": "%d-%m-%Y"}},
        "split": {"kind": "time", "time_column": "Date", "test_size": HELD_OUT},
        "cv": {"folds": 3, "kind": "time_series"},
        "estimator": {"class_path": "sklearn.ensemble.GradientBoostingRegressor",
                      "params": {"n_estimators": 30, "random_state": 0}},
        "evaluation": {"metrics": ["mae", "r2"], "primary": "mae"},
        "deploy": {"gate": {"metric": "cv_mae_mean", "threshold": gate}},
    }


def test_walmart_stores_with_date_features_time_split_and_cv(
        tmp_path: Path, settings: Settings, workers: Any, app: Any, runtime: Any, uniq: str) -> None:
    names = {store: f"wm{store}-{uniq}" for store in STORES}
    # The last store's gate on the CV mean cannot pass (an MAE of at most 1 dollar).
    models = [store_model(names[s], s, 1.0 if s == STORES[-1] else 1e9) for s in STORES]
    batch = load(tmp_path, {"name": f"wm-{uniq}", "models": models}, settings)
    handle, status = run_batch(batch, app, runtime)
    # The last store's gate fails: it is registered, not promoted; the others are promoted.
    assert {r.name: r.status for r in status.rows} == {
        n: "registered" if s == STORES[-1] else "promoted" for s, n in names.items()}, status.rows

    weeks = 143
    for store, name in names.items():
        runs = {r["stage"]: r for r in runtime.tracker.runs(batch_id=handle.batch_id, model=name)}
        prepared = runs["preprocess"]["result"]
        assert prepared["n_test"] == math.ceil(HELD_OUT * weeks) == 15
        assert prepared["n_train"] == weeks - 15
        assert prepared["unused_columns"] == ["CPI"]
        metrics = runs["evaluate"]["metrics"]
        assert set(metrics) == {"mae", "r2", "cv_mae_mean", "cv_mae_std", "cv_r2_mean", "cv_r2_std"}
        assert metrics["cv_mae_mean"] > 0 and metrics["cv_mae_std"] >= 0
        # `show` reads the same report of unused columns from the history.
        [row] = [r for r in model_history(runtime, name) if r["batch_id"] == handle.batch_id]
        assert row["unused_columns"] == ["CPI"]

        version = runtime.registry.resolve(f"{name}/1")
        decision = version["decision"]
        if store == STORES[-1]:
            assert not decision["promoted"] and "cv_mae_mean" in decision["reason"]
            continue
        assert decision["promoted"], decision
        # The deployed file is one Pipeline that takes raw rows as the file has them: the
        # store's last 15 weeks, text dates, every column. Its MAE there is the hold-out MAE.
        raw = pd.read_csv(EXAMPLE_DATA / "walmart_weekly_sales.csv")
        rows = raw[raw["Store"] == int(store)].tail(15)
        model = load_model(f"{name}@production", runtime=runtime)
        predicted = model.predict(rows.drop(columns=["Weekly_Sales"]))
        mae = float(np.mean(np.abs(predicted - rows["Weekly_Sales"].to_numpy())))
        assert mae == pytest.approx(metrics["mae"], rel=1e-9)
        assert [step for step, _ in model.steps] == ["rows", "features", "estimator"]
