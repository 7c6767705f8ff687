"""The Walmart example's naive baselines (bench/walmart_baselines.py), on hand-made series,
and the example spec itself: same hold-out as the pipeline, time-ordered search, mape gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.walmart_baselines import StoreResult, baselines, mean_of_training, same_week_last_year, summary
from producer.spec import load_batch
from tests.conftest import REPO
from workers.contracts import CsvDataset
from workers.pipeline.data import load_dataset
from workers.pipeline.preprocess import prepare
from workers.settings import Settings

EXAMPLE = REPO / "examples" / "walmart_forecast.yaml"


def weekly(n: int) -> pd.Series:
    return pd.Series(pd.date_range("2010-02-05", periods=n, freq="7D"))


def test_same_week_last_year_is_the_training_row_52_weeks_earlier() -> None:
    dates, y = weekly(60), 100.0 + np.arange(60) ** 2  # every value distinct
    test = np.arange(60) >= 55
    assert same_week_last_year(dates, y, test).tolist() == [y[i - 52] for i in range(55, 60)]


def test_same_week_last_year_is_nan_without_that_week_and_never_reads_the_hold_out() -> None:
    dates, y = weekly(60).drop(index=4).reset_index(drop=True), np.arange(59, dtype=float)
    forecast = same_week_last_year(dates, y, np.arange(59) >= 54)  # row 55 of 60 was week 56
    assert np.isnan(forecast[1]) and not np.isnan(forecast).any(where=np.arange(5) != 1)
    # A hold-out longer than a year: its second year would need its own first year's actuals.
    long = np.arange(59) >= 2
    forecast = same_week_last_year(dates, y, long)  # rows 51, 52 are weeks 52, 53
    assert forecast[51 - 2:53 - 2].tolist() == [y[0], y[1]] and np.isnan(forecast[53 - 2:]).all()


def test_mean_of_training_uses_only_the_training_rows() -> None:
    y = np.array([1.0, 2.0, 3.0, 1e9, 1e9])
    test = np.array([False, False, False, True, True])
    assert mean_of_training(y, test).tolist() == [2.0, 2.0]


def test_the_baselines_hold_out_is_the_pipelines_for_the_example_spec() -> None:
    batch = load_batch(EXAMPLE, Settings(data_root=REPO))
    model = next(m for m in batch.models if isinstance(m.dataset, CsvDataset) and m.dataset.segment == "7")
    assert isinstance(model.dataset, CsvDataset)
    rows = pd.read_csv(REPO / model.dataset.path)
    actual, naive = baselines(rows[rows["Store"] == 7], model)
    split = prepare(load_dataset(model.dataset, model.task, REPO), model)
    assert np.array_equal(actual, split.y_test) and len(actual) == 13
    assert not np.isnan(naive["last_year"]).any() and len(set(naive["train_mean"])) == 1
    # The flagship's promises: a search on time-ordered folds, a scale-free gate.
    assert model.search is not None and model.split.kind == "time"
    assert model.deploy.gate.metric == "mape" and len(batch.models) == 45


def test_summary_counts_stores_beaten_and_the_median_improvement() -> None:
    def store(name: str, model: float, last_year: float, train_mean: float) -> StoreResult:
        return StoreResult(name, 13, model, last_year, train_mean, 1.0, 0.0, 0.0)

    out = summary([store("1", 50, 100, 40), store("2", 90, 100, 100), store("3", 100, 80, 200)])
    assert out["beats_last_year"] == 2 and out["beats_train_mean"] == 2
    assert out["median_improvement_last_year"] == pytest.approx(0.1)  # of 0.5, 0.1, -0.25
    assert out["median_improvement_train_mean"] == pytest.approx(0.1)  # of -0.25, 0.1, 0.5
    assert out["mae"]["model"] == pytest.approx(80)
