"""Does the Walmart example beat naive forecasts? Per store, on the example's own hold-out.

Two baselines, computed from the raw table with the example's split (time_split_mask, the
function the preprocess stage uses): "same week last year" (the training row 52 weeks
earlier) and "mean of the training weeks". The model side re-runs the example's pure
pipeline functions (prepare, build_model, the search, fit) per store, as the stages do,
minus Celery and Redis; its hold-out rows are checked to be the baselines' rows.

    python bench/walmart_baselines.py [examples/walmart_forecast.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from producer.spec import load_batch  # noqa: E402
from workers.contracts import CsvDataset, ModelSpec  # noqa: E402
from workers.pipeline.data import load_dataset  # noqa: E402
from workers.pipeline.estimators import build_estimator  # noqa: E402
from workers.pipeline.features import build_model, estimator_prefix, parse_dates  # noqa: E402
from workers.pipeline.preprocess import prepare, time_split_mask  # noqa: E402
from workers.pipeline.search import around, build_search, run_search  # noqa: E402
from workers.pipeline.train import fit  # noqa: E402
from workers.settings import Settings  # noqa: E402

LAST_YEAR = pd.Timedelta(weeks=52)  # 364 days: the same weekday, the same retail week


def same_week_last_year(dates: pd.Series, y: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per test row, the target of the training row exactly 52 weeks earlier (NaN if none).

    Only training rows are looked up, so a hold-out longer than a year never reads its own
    actuals."""
    history = pd.Series(y[~test], index=pd.DatetimeIndex(dates[~test]))
    return history.reindex(pd.DatetimeIndex(dates[test]) - LAST_YEAR).to_numpy(dtype=float)


def mean_of_training(y: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per test row, the mean target of the training rows."""
    return np.full(int(test.sum()), float(np.mean(y[~test])))


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(actual - predicted)))


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """As a fraction (0.05 is 5%), the way scikit-learn and the example's gate read it."""
    return float(np.mean(np.abs(actual - predicted) / np.abs(actual)))


@dataclass(frozen=True)
class StoreResult:
    store: str
    n_test: int
    model_mae: float
    last_year_mae: float
    train_mean_mae: float
    mean_sales: float  # of the hold-out weeks, for scale
    model_mape: float  # what the example's gate reads
    last_year_mape: float


def baselines(frame: pd.DataFrame, model: ModelSpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(hold-out targets, each baseline's forecasts) for one series, split as `model` splits."""
    ds, split = model.dataset, model.split
    assert isinstance(ds, CsvDataset) and split.kind == "time" and split.time_column is not None
    dates = parse_dates(frame[split.time_column], model.features.dates.format)
    order = np.argsort(dates.to_numpy(), kind="stable")
    dates, y = dates.iloc[order].reset_index(drop=True), frame[ds.target].to_numpy(float)[order]
    test = time_split_mask(dates, split.test_size or model.preprocess.test_size, split.cutoff)
    naive = {"last_year": same_week_last_year(dates, y, test), "train_mean": mean_of_training(y, test)}
    return y[test], naive


def model_forecast(model: ModelSpec, data_root: Path, prefixes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hold-out targets, the deployed model's forecasts): the train stage's steps, no Celery."""
    split = prepare(load_dataset(model.dataset, model.task, data_root), model)
    estimator = build_estimator(model.estimator, model.task, prefixes)
    pipeline = build_model(model, list(split.X_train.columns), estimator)
    if model.search is None:
        fitted = fit(pipeline, split.X_train, split.y_train)
    else:
        search = build_search(estimator, model.search, model.search_metric, model.task, prefixes,
                              time_ordered=model.split.kind == "time")
        searched = around(search, pipeline, estimator_prefix(model))
        fitted, _ = run_search(searched, split.X_train, split.y_train)
    return split.y_test, np.asarray(fitted.predict(split.X_test), dtype=float)


def compare(spec_path: Path, data_root: Path = REPO) -> list[StoreResult]:
    settings = Settings(data_root=data_root)
    batch = load_batch(spec_path, settings)
    results = []
    for model in batch.models:
        ds = model.dataset
        assert isinstance(ds, CsvDataset) and ds.segment_by is not None
        table = pd.read_csv(data_root / ds.path)
        rows = table[table[ds.segment_by].astype(str) == ds.segment]
        actual, naive = baselines(rows, model)
        with threadpool_limits(1):
            prefixes = list(settings.allowed_estimator_prefixes)
            model_actual, predicted = model_forecast(model, data_root, prefixes)
        if not np.array_equal(actual, model_actual):
            raise SystemExit(f"{model.name}: the model's hold-out rows are not the baselines' rows")
        results.append(StoreResult(str(ds.segment), len(actual), mae(actual, predicted),
                                   mae(actual, naive["last_year"]), mae(actual, naive["train_mean"]),
                                   float(np.mean(actual)), mape(actual, predicted),
                                   mape(actual, naive["last_year"])))
    return results


def summary(results: list[StoreResult]) -> dict[str, Any]:
    """Overall MAE of each, stores where the model beats each baseline, median improvement."""
    out: dict[str, Any] = {"stores": len(results),
                           "mae": {k: statistics.fmean(getattr(r, f"{k}_mae") for r in results)
                                   for k in ("model", "last_year", "train_mean")}}
    for base in ("last_year", "train_mean"):
        gains = [1 - r.model_mae / getattr(r, f"{base}_mae") for r in results]
        out[f"beats_{base}"] = sum(g > 0 for g in gains)
        out[f"median_improvement_{base}"] = statistics.median(gains)
    return out


def table(results: list[StoreResult], overall: dict[str, Any]) -> str:
    lines = [f"{'store':>5} {'weeks':>5} {'mean sales':>11} {'model MAE':>10} {'last-year MAE':>13} "
             f"{'train-mean MAE':>14} {'model MAPE':>10} {'last-year MAPE':>14}"]
    for r in sorted(results, key=lambda r: int(r.store)):
        lines.append(f"{r.store:>5} {r.n_test:>5} {r.mean_sales:>11,.0f} {r.model_mae:>10,.0f} "
                     f"{r.last_year_mae:>13,.0f} {r.train_mean_mae:>14,.0f} {r.model_mape:>10.1%} "
                     f"{r.last_year_mape:>14.1%}")
    m, n = overall["mae"], overall["stores"]
    lines.append(f"{'all':>5} {'':>5} {'':>11} {m['model']:>10,.0f} {m['last_year']:>13,.0f} "
                 f"{m['train_mean']:>14,.0f}   (mean over stores)")
    for base, title in (("last_year", "same week last year"), ("train_mean", "mean of the training weeks")):
        lines.append(f"model beats {title} on {overall[f'beats_{base}']}/{n} stores; median MAE "
                     f"improvement {overall[f'median_improvement_{base}']:.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(REPO / "examples" / "walmart_forecast.yaml"))
    parser.add_argument("--json", help="also write the per-store results and summary here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = compare(Path(args.spec))
    overall = summary(results)
    print(table(results, overall))
    print(f"({time.perf_counter() - started:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": overall, "stores": [asdict(r) for r in results]},
                                              indent=1))


if __name__ == "__main__":
    main()
