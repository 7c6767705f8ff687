"""The loop after deploy, on the Walmart table with its last 4 weeks held back: 45 store models
trained by `modelfleet.run` (embedded Redis, real workers), then

- `evaluate` checks each production model on the held-back weeks beside the metrics it was
  promoted with, flags the store whose sales drifted, records the checks as runs, shows them
  in `report`, and `--retrain` sends only the flagged store back through the gate;
- a lag-model variant predicts those 4 weeks of every store from the feature rows alone, its
  lags built from the history stored with each version: the same predictions as with the
  true lags computed by hand; a row past the history's reach is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import modelfleet
from tests.conftest import EXAMPLE_DATA
from workers.settings import Settings

# 90 models trained once for the module, then a retrain batch: minutes on 2 busy cores.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

HELD_WEEKS = 4
DRIFTED = "5"  # this store's held-back sales are scaled by 1.6: its error must be flagged
LAGS = [4, 8]
TARGET = "Weekly_Sales"


def family(name: str, **features: Any) -> dict[str, Any]:
    return {"name": name, "task": "regression",
            "dataset": {"kind": "csv", "path": "walmart.csv", "target": TARGET, "segment_by": "Store"},
            "features": {"dates": {"columns": ["Date"], "format": "%d-%m-%Y",
                                   "parts": ["year", "month", "week"]},
                         "drop": ["Temperature", "Fuel_Price", "CPI", "Unemployment"], **features},
            "split": {"kind": "time", "time_column": "Date", "cutoff": "2012-07-27"},
            "evaluation": {"metrics": ["mae", "mape"], "primary": "mae"},
            "deploy": {"alias": "production", "gate": {"metric": "mape", "threshold": 0.5}},
            "estimator": {"class_path": "sklearn.ensemble.GradientBoostingRegressor",
                          "params": {"n_estimators": 50, "max_depth": 2, "random_state": 0}}}


class Trained:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.full = pd.read_csv(EXAMPLE_DATA / "walmart_weekly_sales.csv", dtype={"Store": str})
        dates = pd.to_datetime(self.full["Date"], format="%d-%m-%Y")
        self.held = dates.isin(sorted(dates.unique())[-HELD_WEEKS:]).to_numpy()
        self.settings = Settings(data_root=root / "data", local_redis_dir=root / "mf" / "redis",
                                 artifact_root=root / "mf" / "artifacts")
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")},
                    **self.settings.to_env()}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "producer", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Both families (45 stores each) trained on the table without its last 4 weeks."""
    t = Trained(tmp_path_factory.mktemp("loop"))
    (t.root / "data").mkdir()
    t.full[~t.held].to_csv(t.root / "data" / "walmart.csv", index=False)
    spec = t.root / "loop.yaml"
    spec.write_text(yaml.safe_dump({"name": "loop", "models": [
        family("store"), family("lagstore", lags={"periods": LAGS})]}))
    status = modelfleet.run(spec, workers=2, settings=t.settings, timeout=900)
    assert status.counts == {"promoted": 90}, [(r.name, r.status, r.reason, r.error) for r in status.rows
                                               if r.status != "promoted"][:5]
    return t


def test_evaluate_flags_the_drifted_store_records_its_history_and_retrains_only_it(trained: Trained) -> None:
    # Given the held-back weeks, labelled, one store's sales drifted up by 60%
    labelled = trained.full[trained.held].copy()
    drifted = labelled["Store"] == DRIFTED
    labelled.loc[drifted, TARGET] *= 1.6
    path = trained.root / "new-weeks.csv"
    labelled.to_csv(path, index=False)

    # When the production models are evaluated on them, per store
    done = trained.cli("evaluate", "store@production", str(path), "--segment-by", "Store", "--json")

    # Then every store is checked on its 4 new weeks, beside the metrics it was promoted with
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    checks = {c["segment"]: c for c in result["checks"]}
    assert len(checks) == 45 and all(c["rows"] == HELD_WEEKS for c in checks.values())
    versions = {s: modelfleet.load_model(f"store-{s}@production", trained.settings) for s in ("1", DRIFTED)}
    for store, model in versions.items():
        rows = labelled[labelled["Store"] == store]
        mae = float(np.mean(np.abs(model.predict(rows) - rows[TARGET].to_numpy())))
        assert checks[store]["now"]["mae"] == pytest.approx(mae, rel=1e-9)
        record = json.loads(trained.cli("models", "versions", f"store-{store}", "--json").stdout)
        assert checks[store]["registered"] == record["versions"][-1]["metrics"]
    # ... the drifted store is flagged on its gate metric (mape), by more than the tolerance
    flag = checks[DRIFTED]
    assert flag["flagged"] and flag["metric"] == "mape" and flag["ratio"] > 1.5
    assert flag["now"]["mape"] > 1.5 * flag["registered"]["mape"]
    assert result["flagged"] == [c["model"] for c in result["checks"] if c["flagged"]]
    assert f"store-{DRIFTED}/1" in result["flagged"]
    # ... the table says so too
    table = trained.cli("evaluate", "store@production", str(path), "--segment-by", "Store")
    assert table.returncode == 0
    assert any(f"store-{DRIFTED}/1" in x and "FLAG" in x for x in table.stdout.splitlines())

    # And each check is a run of its model: two evaluations, two points of the store's history
    monitor = json.loads(trained.cli("runs", "--model", f"store-{DRIFTED}", "--stage", "monitor",
                                     "--json").stdout)
    assert len(monitor) == 2 and all(r["result"]["flagged"] for r in monitor)
    shown = trained.cli("runs", "--model", f"store-{DRIFTED}", "--stage", "monitor")
    assert shown.returncode == 0 and shown.stdout.count("monitor") >= 2
    # ... and the model's report page has a monitoring section with them
    report = trained.cli("report", f"store-{DRIFTED}@production", "--out", str(trained.root / "reports"))
    assert report.returncode == 0, report.stderr
    page = (trained.root / "reports" / f"store-{DRIFTED}-v1.html").read_text()
    assert "Monitoring: new labelled data" in page and page.count("flagged (&gt; 1.5x)") == 2

    # When --retrain is asked for
    again = trained.cli("evaluate", "store@production", str(path), "--segment-by", "Store", "--retrain")

    # Then one batch holds the flagged stores only, trained on the table plus the new weeks,
    # and the gate decided again for each
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    newest = json.loads(trained.cli("batches", "--limit", "1", "--json").stdout)[0]
    flagged = sorted(m.partition("/")[0] for m in result["flagged"])
    status = json.loads(trained.cli("status", newest["batch_id"], "--json").stdout)
    assert sorted(r["name"] for r in status["rows"]) == flagged
    assert set(r["status"] for r in status["rows"]) <= {"promoted", "registered"}
    lineage = json.loads(trained.cli("lineage", f"store-{DRIFTED}", "--json").stdout)
    assert lineage["version"] == 2 and lineage["batch_id"] == newest["batch_id"]
    grown = pd.read_csv(trained.root / "data" / lineage["dataset"]["path"], dtype={"Store": str})
    assert len(grown) == len(trained.full)  # the table and the 4 new weeks, nothing twice
    original = trained.full[~trained.held].to_csv(index=False)
    assert (trained.root / "data" / "walmart.csv").read_text() == original


def test_a_lag_model_predicts_the_next_four_weeks_from_the_feature_rows_alone(trained: Trained) -> None:
    # Given the feature rows of the 4 held-back weeks of every store, without sales or lags
    rows = trained.full[trained.held].drop(columns=[TARGET])
    path = trained.root / "next-weeks.csv"
    rows.to_csv(path, index=False)

    # When the lag family predicts them, each row by its store's model
    out = trained.root / "predicted.csv"
    done = trained.cli("predict", "lagstore@production", str(path), "--segment-by", "Store",
                       "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    predicted = pd.read_csv(out, dtype={"Store": str})
    assert len(predicted) == 45 * HELD_WEEKS and predicted["prediction"].notna().all()

    # Then each prediction is the model's on the true lags, computed by hand from the whole table
    full = trained.full.assign(Date_=pd.to_datetime(trained.full["Date"], format="%d-%m-%Y"))
    full = full.sort_values(["Store", "Date_"], kind="stable")
    for k in LAGS:
        full[f"{TARGET}_lag_{k}"] = full.groupby("Store")[TARGET].shift(k)
    truth = full.loc[trained.held[full.index]].drop(columns=[TARGET, "Date_"])
    by_hand = pd.concat([truth[truth["Store"] == s].assign(
        prediction=modelfleet.load_model(f"lagstore-{s}@production", trained.settings).predict(
            truth[truth["Store"] == s])) for s in truth["Store"].unique()])
    merged = predicted.merge(by_hand[["Store", "Date", "prediction"]], on=["Store", "Date"],
                             suffixes=("", "_by_hand"))
    assert len(merged) == 45 * HELD_WEEKS
    np.testing.assert_allclose(merged["prediction"], merged["prediction_by_hand"], rtol=1e-9)

    # And a row a week past the reach of the stored history (lag 4 needs week 1's sales) is refused
    late = rows[rows["Store"] == "1"].tail(1).assign(Date="02-11-2012")
    late.to_csv(trained.root / "late.csv", index=False)
    refused = trained.cli("predict", "lagstore@production", str(trained.root / "late.csv"),
                          "--segment-by", "Store")
    assert refused.returncode == 2
    message = "lagstore-1/1: Store=1: the row at 2012-11-02 is 5 step(s) past the stored history"
    assert message in refused.stderr
    assert "neither stored nor given" in refused.stderr
