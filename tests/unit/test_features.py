"""Features, splits and cross-validation as pure functions: no Celery, no Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tests.conftest import EXAMPLE_DATA, write_spec
from workers.contracts import LOWER_IS_BETTER, ModelSpec
from workers.pipeline.data import Table, load_dataset
from workers.pipeline.errors import PipelineError
from workers.pipeline.estimators import build_estimator
from workers.pipeline.evaluate import compute_metrics, cross_validate
from workers.pipeline.features import DateParts, add_lags, build_model, plan_columns
from workers.pipeline.preprocess import dump_split, load_split, prepare, time_split_mask
from workers.pipeline.train import dump_model, load_model

ALLOWED = ["sklearn."]
WALMART = {"kind": "csv", "path": "walmart_weekly_sales.csv", "target": "Weekly_Sales",
           "segment_by": "Store"}
DATES = {"columns": ["Date"], "format": "%d-%m-%Y"}


def spec(**fields: Any) -> ModelSpec:
    base: dict[str, Any] = {"name": "m", "task": "regression", "dataset": WALMART,
                            "estimator": {"class_path": "sklearn.linear_model.Ridge"}}
    return ModelSpec.model_validate({**base, **fields})


def fit_pipeline(model: ModelSpec, X: pd.DataFrame, y: np.ndarray) -> Any:
    estimator = build_estimator(model.estimator, model.task, ALLOWED)
    return build_model(model, list(X.columns), estimator).fit(X, y)


def shop_table(n_weeks: int = 30) -> Table:
    """Two shops sharing the same weeks, rows shuffled: sales grow by 1 a week."""
    weeks = pd.date_range("2020-01-06", periods=n_weeks, freq="7D")
    frame = pd.DataFrame({"shop": np.repeat(["a", "b"], n_weeks), "week": np.tile(weeks, 2),
                          "price": np.arange(2 * n_weeks, dtype=float)})
    y = np.r_[np.arange(n_weeks), 100 + np.arange(n_weeks)].astype(float)
    order = np.random.default_rng(0).permutation(len(frame))
    return Table(frame.iloc[order].reset_index(drop=True), y[order])


@pytest.mark.parametrize("test_size", [0.05, 0.2, 0.37, 0.5, 0.9])
def test_time_split_never_trains_on_a_later_date_than_it_tests(test_size: float) -> None:
    model = spec(dataset={"kind": "csv", "path": "x.csv", "target": "sales"},
                 split={"kind": "time", "time_column": "week", "test_size": test_size},
                 features={"numeric": {"columns": ["price"]}})
    table = shop_table()
    split = prepare(table, model)
    assert len(split.y_train) and len(split.y_test)
    # The time column is the axis, not a feature here; find each row's week by its price.
    week_of = dict(zip(table.frame["price"], table.frame["week"], strict=True))
    train_weeks = split.X_train["price"].map(week_of)
    test_weeks = split.X_test["price"].map(week_of)
    assert train_weeks.max() < test_weeks.min()
    # Both shops are cut at the same week: rows of one date never straddle the cut.
    assert len(split.y_test) % 2 == 0


def test_time_split_by_cutoff_holds_out_what_comes_after() -> None:
    weeks = pd.Series(pd.date_range("2020-01-06", periods=10, freq="7D"))
    test = time_split_mask(weeks, 0.25, pd.Timestamp("2020-02-03").date())
    assert list(weeks[~test]) == list(weeks[weeks <= "2020-02-03"]) and test.sum() == 5
    with pytest.raises(PipelineError, match="split.cutoff"):
        time_split_mask(weeks, 0.25, pd.Timestamp("2030-01-01").date())


def test_lags_use_only_past_rows_of_the_same_series() -> None:
    model = spec(dataset={"kind": "csv", "path": "x.csv", "target": "sales"},
                 split={"kind": "time", "time_column": "week"},
                 features={"lags": {"periods": [1, 3], "rolling": [2], "by": "shop"}})
    table = shop_table()
    ordered = table.frame.sort_values("week", kind="stable")
    y = table.y[ordered.index.to_numpy()]
    frame, kept_y, columns = add_lags(ordered.reset_index(drop=True), y, model, "sales")
    assert columns == ["sales_lag_1", "sales_lag_3", "sales_rolling_mean_2"]
    # Sales grow by one a week per shop: lag k is y - k, the rolling mean of the 2 before y - 1.5.
    assert np.array_equal(frame["sales_lag_1"], kept_y - 1)
    assert np.array_equal(frame["sales_lag_3"], kept_y - 3)
    assert np.array_equal(frame["sales_rolling_mean_2"], kept_y - 1.5)
    assert len(kept_y) == len(y) - 2 * 3  # each shop's first 3 weeks lack a full history
    # Changing the last week's sales changes no row's features: no future leaks in.
    changed = y.copy()
    changed[-2:] += 1e6
    again, _, _ = add_lags(ordered.reset_index(drop=True), changed, model, "sales")
    assert again[columns].equals(frame[columns])


def test_unknown_category_at_predict_does_not_crash() -> None:
    frame = pd.DataFrame({"colour": ["red", "blue", "red", "green"] * 5, "size": np.arange(20.0)})
    y = np.arange(20.0)
    for encode in ("onehot", "ordinal"):
        model = spec(features={"categorical": {"columns": ["colour"], "encode": encode}})
        fitted = load_model(dump_model(fit_pipeline(model, frame, y)), ALLOWED)
        rows = pd.DataFrame({"colour": ["purple", None, "red"], "size": [1.0, 2.0, 3.0]})
        assert np.isfinite(fitted.predict(rows)).all()


def test_a_column_no_rule_uses_is_reported_not_dropped_silently() -> None:
    model = spec(features={"drop": ["CPI"]})
    table = load_dataset(model.dataset, model.task, EXAMPLE_DATA)
    plan = plan_columns(table.frame, model)
    assert plan.unused == ["Date"]  # text: no rule reads it (Store is the segment, CPI dropped)
    assert "CPI" not in plan.inputs and "Store" not in plan.inputs
    with_dates = spec(features={"dates": DATES, "drop": ["CPI"]})
    assert plan_columns(table.frame, with_dates).unused == []


def test_walmart_with_date_parts_time_split_and_cv_serves_raw_rows() -> None:
    model = spec(dataset={**WALMART, "segment": "4"}, features={"dates": DATES, "lags": {"periods": [1]},
                                                                "target_transform": "log1p"},
                 split={"kind": "time", "time_column": "Date", "test_size": 0.15},
                 cv={"folds": 3, "kind": "time_series"}, evaluation={"metrics": ["mae", "r2"]})
    split = load_split(dump_split(prepare(load_dataset(model.dataset, model.task, EXAMPLE_DATA), model)))
    assert list(split.X_train.columns)[-2:] == ["Weekly_Sales_lag_1", "Date"]
    fitted = fit_pipeline(model, split.X_train, split.y_train)
    cv = cross_validate(fitted, split.X_train, split.y_train, model.cv, 0, model.metric_names)  # type: ignore[arg-type]
    assert set(cv) == {"cv_mae_mean", "cv_mae_std", "cv_r2_mean", "cv_r2_std"} and cv["cv_mae_std"] >= 0
    loaded = load_model(dump_model(fitted), ALLOWED)
    # Raw rows as in the file: the date as text, extra columns ignored.
    raw = split.X_test.assign(Date=split.X_test["Date"].dt.strftime("%d-%m-%Y"), Store="4")
    assert np.allclose(loaded.predict(raw), fitted.predict(split.X_test))
    assert compute_metrics(loaded, raw, split.y_test, ["mae"])["mae"] > 0


def test_date_parts_read_text_and_datetimes_alike() -> None:
    parts = DateParts(["year", "month", "week", "dayofweek"], "%d-%m-%Y")
    text = pd.DataFrame({"d": ["05-02-2010", "31-12-2012"]})
    expected = [[2010, 2, 5, 4], [2012, 12, 1, 0]]  # ISO week; Monday is 0
    assert parts.fit(text).transform(text).tolist() == expected
    dates = pd.DataFrame({"d": pd.to_datetime(text["d"], format="%d-%m-%Y")})
    assert parts.transform(dates).tolist() == expected
    assert list(parts.get_feature_names_out()) == ["d_year", "d_month", "d_week", "d_dayofweek"]


def test_parquet_files_keep_their_dtypes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"day": pd.date_range("2021-01-01", periods=40), "kind": ["x", "y"] * 20,
                          "v": np.arange(40.0), "y": np.arange(40.0) * 2})
    frame.to_parquet(tmp_path / "t.parquet")
    model = spec(dataset={"kind": "parquet", "path": "t.parquet", "target": "y"},
                 features={"categorical": {"columns": ["kind"]}, "dates": {"columns": ["day"]}},
                 split={"kind": "time", "time_column": "day", "test_size": 0.25})
    table = load_dataset(model.dataset, model.task, tmp_path)
    assert pd.api.types.is_datetime64_any_dtype(table.frame["day"])
    split = prepare(table, model)
    assert len(split.y_test) == 10 and split.unused == []
    assert compute_metrics(fit_pipeline(model, split.X_train, split.y_train), split.X_test, split.y_test,
                           ["mae"])["mae"] >= 0


def test_old_preprocess_options_are_the_numeric_defaults() -> None:
    model = spec(preprocess={"impute": "median", "scale": "minmax"})
    numeric = build_model(model, ["a"], None).named_steps["features"]
    assert [type(s).__name__ for _, s in numeric.steps] == ["SimpleImputer", "MinMaxScaler"]
    # With a categorical column too, the same numeric steps sit in a ColumnTransformer.
    mixed = spec(preprocess={"impute": "median", "scale": "minmax"},
                 features={"categorical": {"columns": ["b"]}})
    transform = build_model(mixed, ["a", "b"], None).named_steps["features"]
    assert [name for name, _, _ in transform.transformers] == ["numeric", "categorical"]
    assert transform.transformers[0][1].steps[0][1].strategy == "median"
    assert numeric.steps[0][1].strategy == "median"
    own = spec(preprocess={"impute": "median"}, features={"numeric": {"impute": "mean", "scale": "none"}})
    steps = build_model(own, ["a"], None).named_steps["features"].steps
    assert [s.strategy for _, s in steps] == ["mean"]


def test_gates_and_primary_may_name_cv_metrics_only_with_cv() -> None:
    with_cv = spec(cv={"folds": 3}, evaluation={"metrics": ["mae"], "primary": "cv_mae_mean"},
                   deploy={"gate": {"metric": "cv_mae_mean", "threshold": 1e9}})
    assert with_cv.reported_metrics == ["mae", "cv_mae_mean", "cv_mae_std"]
    assert "cv_mae_mean" in LOWER_IS_BETTER and "cv_r2_mean" not in LOWER_IS_BETTER
    with pytest.raises(ValidationError, match="cv_mae_mean"):
        spec(evaluation={"metrics": ["mae"]}, deploy={"gate": {"metric": "cv_mae_mean"}})


@pytest.mark.parametrize(("fields", "message"), [
    ({"split": {"kind": "time"}}, "time split needs time_column"),
    ({"split": {"kind": "random", "cutoff": "2012-01-01", "time_column": "Date"}}, "cutoff"),
    ({"cv": {"kind": "stratified"}}, "stratified is for classification"),
    ({"cv": {"kind": "time_series"}}, "needs split.kind time"),
    ({"features": {"lags": {"periods": [1]}}}, "needs split.time_column"),
    ({"features": {"categorical": {"columns": ["a"]}, "drop": ["a"]}}, "both categorical and drop"),
])
def test_inconsistent_sections_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**fields)


@pytest.mark.parametrize(("features", "split", "field", "fragment"), [
    ({"categorical": {"columns": ["Colour"]}}, {}, "features.categorical.columns", "'Colour'"),
    ({"numeric": {"columns": ["Date"]}}, {}, "features.numeric.columns", "not numeric"),
    ({"dates": {"columns": ["Date"], "format": "%Y-%m-%d"}}, {}, "features.dates.columns", "dates"),
    ({}, {"kind": "time", "time_column": "When"}, "split.time_column", "'When'"),
])
def test_features_are_checked_against_the_file_at_submit(
        tmp_path: Path, features: dict[str, Any], split: dict[str, Any], field: str, fragment: str) -> None:
    from producer.spec import SpecError, load_batch
    from workers.settings import Settings

    model = {"name": "store", "task": "regression", "dataset": WALMART, "features": features,
             "split": split, "estimator": {"class_path": "sklearn.linear_model.Ridge"}}
    path = write_spec(tmp_path, {"name": "b", "models": [model]})
    with pytest.raises(SpecError) as info:
        load_batch(path, Settings(data_root=EXAMPLE_DATA))
    [problem] = info.value.problems
    assert f"field {field!r}" in problem and fragment in problem and "model 'store'" in problem


def test_sections_left_at_their_defaults_stay_out_of_the_message() -> None:
    plain = spec()
    assert not {"features", "split", "cv"} & set(plain.model_dump(mode="json"))
    full = spec(features={"dates": DATES}, split={"kind": "time", "time_column": "Date",
                                                  "cutoff": "2012-07-27"}, cv={"folds": 3})
    again = ModelSpec.model_validate_json(full.model_dump_json())
    assert again == full and str(again.split.cutoff) == "2012-07-27"


def test_a_search_runs_around_the_features_and_reports_params_as_the_spec_wrote_them() -> None:
    from workers.pipeline.features import estimator_prefix
    from workers.pipeline.search import around, build_search, run_search

    model = spec(dataset={**WALMART, "segment": "5"}, features={"dates": DATES, "target_transform": "log1p"},
                 split={"kind": "time", "time_column": "Date", "test_size": 0.1},
                 estimator={"class_path": "sklearn.linear_model.Ridge"},
                 search={"kind": "grid", "space": {"alpha": [0.1, 10.0]}, "cv": 3},
                 evaluation={"metrics": ["mae"]})
    split = prepare(load_dataset(model.dataset, model.task, EXAMPLE_DATA), model)
    estimator = build_estimator(model.estimator, model.task, ALLOWED)
    assert model.search is not None
    search = build_search(estimator, model.search, model.search_metric, model.task, ALLOWED)
    pipeline = build_model(model, list(split.X_train.columns), estimator)
    best, report = run_search(around(search, pipeline, estimator_prefix(model)), split.X_train, split.y_train)
    assert set(report["best_params"]) == {"alpha"} and report["n_trials"] == 2
    assert [step for step, _ in best.steps] == ["rows", "features", "estimator"]
    assert best.named_steps["estimator"].regressor.alpha == report["best_params"]["alpha"]
    assert best.predict(split.X_test).shape == split.y_test.shape


def test_a_shipped_dataset_with_features_is_checked_at_submit(tmp_path: Path) -> None:
    from producer.spec import SpecError, load_batch
    from workers.settings import Settings

    model = {"name": "iris", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
             "features": {"categorical": {"columns": ["petal colour"]}},
             "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier"}}
    path = write_spec(tmp_path, {"name": "b", "models": [model]})
    with pytest.raises(SpecError, match="features.categorical.columns.*'petal colour'"):
        load_batch(path, Settings(data_root=EXAMPLE_DATA))


def test_the_report_names_importances_by_feature_through_the_pipeline() -> None:
    from workers.pipeline.evaluate import importances

    model = spec(dataset={**WALMART, "segment": "7"}, features={"dates": DATES, "target_transform": "log1p"},
                 estimator={"class_path": "sklearn.ensemble.RandomForestRegressor",
                            "params": {"n_estimators": 5, "random_state": 0}})
    split = prepare(load_dataset(model.dataset, model.task, EXAMPLE_DATA), model)
    names = [name for name, _ in importances(fit_pipeline(model, split.X_train, split.y_train))["features"]]
    assert "dates__Date_week" in names and "numeric__Temperature" in names


def test_features_merge_from_defaults_and_vary_on_a_matrix_axis(tmp_path: Path) -> None:
    from producer.spec import load_batch
    from workers.settings import Settings

    store = {**WALMART, "segment": "1"}
    batch = {"name": "b", "defaults": {"task": "regression", "features": {"dates": DATES},
                                       "estimator": {"class_path": "sklearn.linear_model.Ridge"}},
             "models": [{"name": "own", "dataset": store, "features": {"drop": ["CPI"]}}],
             "matrix": {"name": "m-{features}", "base": {"dataset": store},
                        "axes": {"features": {"plain": {}, "ordinal": {"categorical": {
                            "columns": ["Holiday_Flag"], "encode": "ordinal"}}}}}}
    loaded = load_batch(write_spec(tmp_path, batch), Settings(data_root=EXAMPLE_DATA))
    models = {m.name: m for m in loaded.models}
    assert models["own"].features.dates.columns == ["Date"] and models["own"].features.drop == ["CPI"]
    assert models["m-plain"].features.categorical.columns == []
    assert models["m-ordinal"].features.categorical.encode == "ordinal"
    assert models["m-ordinal"].features.dates.format == "%d-%m-%Y"
