"""The pure ML steps as plain functions: no Celery, no Redis."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.model_selection import train_test_split

from tests.conftest import EXAMPLE_DATA
from workers.contracts import CsvDataset, EstimatorSpec, ModelSpec, SyntheticDataset
from workers.pipeline.data import load_dataset
from workers.pipeline.errors import PipelineError
from workers.pipeline.estimators import build_estimator
from workers.pipeline.evaluate import compute_metrics
from workers.pipeline.features import build_model
from workers.pipeline.preprocess import Split, _random_mask, _rows, dump_split, load_split, prepare
from workers.pipeline.train import dump_model, fit, load_model

ALLOWED = ["sklearn."]


def spec(task: str, dataset: dict[str, Any], class_path: str, **fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "task": task, "dataset": dataset,
                                     "estimator": {"class_path": class_path}, **fields})


def fitted(model: ModelSpec, split: Any, **params: Any) -> Any:
    estimator = build_estimator(EstimatorSpec(class_path=model.estimator.class_path, params=params),
                                model.task, ALLOWED)
    return fit(build_model(model, list(split.X_train.columns), estimator), split.X_train, split.y_train)


def test_an_estimator_spec_that_passed_is_built_again_without_the_param_checks(monkeypatch: Any) -> None:
    from workers.pipeline import estimators

    validated: list[str] = []
    real = estimators._validate
    monkeypatch.setattr(estimators, "_validate",
                        lambda est, field: (validated.append(field), real(est, field)))
    forest = EstimatorSpec.model_validate({"class_path": "sklearn.ensemble.RandomForestRegressor",
                                           "params": {"n_estimators": 3, "random_state": 7}})
    first = build_estimator(forest, "regression", ALLOWED)
    second = build_estimator(forest, "regression", ALLOWED)
    assert validated == ["estimator.params"]  # checked once, in this process
    assert second is not first and second.get_params() == first.get_params()
    assert not hasattr(second, "estimators_")  # a fresh, unfitted estimator each time
    # Another task, allow-list or value is another spec: checked, and refused where it must be
    with pytest.raises(PipelineError, match="is not a classifier"):
        build_estimator(forest, "classification", ALLOWED)
    with pytest.raises(PipelineError, match="not under an allowed prefix"):
        build_estimator(forest, "regression", ["sklearn.linear_model."])
    with pytest.raises(PipelineError, match="n_estimators"):
        build_estimator(forest.model_copy(update={"params": {"n_estimators": 0}}), "regression", ALLOWED)
    # A nested spec: its members are built fresh too, named lists still tuples
    stack = EstimatorSpec.model_validate({"class_path": "sklearn.ensemble.VotingRegressor", "params": {
        "estimators": [["ridge", {"class_path": "sklearn.linear_model.Ridge", "params": {"alpha": 2.0}}]]}})
    a, b = build_estimator(stack, "regression", ALLOWED), build_estimator(stack, "regression", ALLOWED)
    assert b.estimators[0][0] == "ridge" and isinstance(b.estimators[0], tuple)
    assert b.estimators[0][1] is not a.estimators[0][1] and b.estimators[0][1].alpha == 2.0


def test_iris_end_to_end_as_plain_functions() -> None:
    model = spec("classification", {"kind": "sklearn", "name": "iris"},
                 "sklearn.linear_model.LogisticRegression", preprocess={"seed": 1})
    split = prepare(load_dataset(model.dataset, model.task, Path(".")), model)
    # stratified: every class is in the test set in proportion
    assert sorted(np.unique(split.y_test, return_counts=True)[1]) == [12, 13, 13]
    loaded = load_model(dump_model(fitted(model, split, max_iter=500)), ALLOWED)
    metrics = compute_metrics(loaded, split.X_test, split.y_test, ["accuracy", "f1_macro"])
    assert metrics["accuracy"] > 0.85 and 0 < metrics["f1_macro"] <= 1


def test_fit_skips_only_the_param_check_that_building_the_estimator_did() -> None:
    # A value scikit-learn would refuse in a fit is refused when the estimator is built
    # (train builds it on every delivery), naming the param
    with pytest.raises(PipelineError, match="alpha") as refused:
        build_estimator(EstimatorSpec(class_path="sklearn.linear_model.Ridge", params={"alpha": -1.0}),
                        "regression", ALLOWED)
    assert refused.value.field == "estimator.params"
    # A fit leaves scikit-learn's config as it found it: its own checks elsewhere still run
    model = spec("regression", {"kind": "sklearn", "name": "diabetes"}, "sklearn.linear_model.Ridge")
    split = prepare(load_dataset(model.dataset, model.task, Path(".")), model)
    assert fitted(model, split, alpha=0.5).named_steps["estimator"].alpha == 0.5
    assert sklearn.get_config()["skip_parameter_validation"] is False
    with pytest.raises(ValueError, match="alpha"):
        sklearn.linear_model.Ridge(alpha=-1.0).fit(split.X_train, split.y_train)


def test_split_rows_keep_every_dtype_and_the_seeded_split_is_scikit_learns() -> None:
    frame = pd.DataFrame({"n": pd.array([1, None, 3, 4, 5, 6, 7, 8, 9, 10], dtype="Int64"),
                          "s": pd.array(list("abcdefghi") + [None], dtype="string"),
                          "c": pd.Categorical(list("xyxyxyxyxz")), "o": list("pqrstuvwxy"),
                          "d": pd.date_range("2024-01-01", periods=10), "f": np.arange(10.0)})
    rows = np.array([9, 0, 3, 1])
    columns = ["f", "n", "s", "c", "o", "d"]
    expected = frame[columns].iloc[rows].reset_index(drop=True)
    pd.testing.assert_frame_equal(_rows(frame, columns, rows), expected)
    # The unstratified split is train_test_split's, drawn once per (rows, size, seed) and shared
    model = spec("regression", {"kind": "sklearn", "name": "diabetes"}, "sklearn.linear_model.Ridge",
                 preprocess={"seed": 7, "test_size": 0.3})
    y = np.arange(50.0)
    _, test_rows = train_test_split(np.arange(50), test_size=0.3, random_state=7)
    assert np.array_equal(np.flatnonzero(_random_mask(y, model)), np.sort(test_rows))
    assert np.array_equal(_random_mask(y, model), _random_mask(y.copy(), model))
    other_seed = model.model_copy(update={"preprocess": model.preprocess.model_copy(update={"seed": 8})})
    assert not np.array_equal(_random_mask(y, other_seed), _random_mask(y, model))


def test_split_round_trips_without_pickle() -> None:
    model = spec("regression", {"kind": "synthetic", "n_samples": 100}, "sklearn.linear_model.Ridge",
                 preprocess={"test_size": 0.2})
    split = prepare(load_dataset(model.dataset, model.task, Path(".")), model)
    data = dump_split(split)
    assert data[:6] == b"ARROW1"  # an Arrow IPC file: typed columns, no pickle
    again = load_split(data)
    assert again.X_train.shape == (80, 20) and np.array_equal(again.y_test, split.y_test)
    assert again.X_test.equals(split.X_test)


def test_a_split_with_dates_text_and_labels_round_trips_and_an_older_parquet_one_loads() -> None:
    frame = pd.DataFrame({"day": pd.date_range("2026-01-01", periods=6), "city": list("abcabc"),
                          "n": [1, 2, 3, 4, 5, 6]})
    split = Split(frame.iloc[:4], frame.iloc[4:].reset_index(drop=True),
                  np.array(["x", "y", "x", "y"], dtype=object), np.array(["y", "x"], dtype=object))
    for data in (dump_split(split), _as_parquet(split)):  # a store written before the Arrow format
        again = load_split(data)
        assert again.X_train.equals(split.X_train) and again.X_test.equals(split.X_test)
        assert list(again.y_train) == ["x", "y", "x", "y"] and again.y_test.dtype == object


def _as_parquet(split: Split) -> bytes:
    """A split as the Parquet-writing versions stored it."""
    frame = pd.concat([split.X_train, split.X_test], ignore_index=True)
    frame["__target__"] = np.concatenate([split.y_train, split.y_test])
    frame["__test__"] = [False] * len(split.y_train) + [True] * len(split.y_test)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_synthetic_is_seeded() -> None:
    a = load_dataset(SyntheticDataset(kind="synthetic", seed=3), "classification", Path("."))
    b = load_dataset(SyntheticDataset(kind="synthetic", seed=3), "classification", Path("."))
    c = load_dataset(SyntheticDataset(kind="synthetic", seed=4), "classification", Path("."))
    assert a.frame.equals(b.frame) and not a.frame.equals(c.frame)


def test_walmart_segment_regression_beats_mean() -> None:
    model = spec("regression", {"kind": "csv", "path": "walmart_weekly_sales.csv",
                                "target": "Weekly_Sales", "segment_by": "Store", "segment": "20"},
                 "sklearn.ensemble.RandomForestRegressor")
    table = load_dataset(model.dataset, model.task, EXAMPLE_DATA)
    assert len(table.y) == 143 and "Weekly_Sales" not in table.feature_names
    split = prepare(table, model)
    # The old default: every numeric column but the segment; Date is reported, not dropped silently.
    assert list(split.X_train.columns) == ["Holiday_Flag", "Temperature", "Fuel_Price", "CPI",
                                           "Unemployment"]
    assert split.unused == ["Date"]
    metrics = compute_metrics(fitted(model, split, n_estimators=50, random_state=0), split.X_test,
                              split.y_test, ["r2", "mae", "rmse"])
    assert metrics["mae"] > 0 and metrics["rmse"] >= metrics["mae"]


def test_imputation_fills_missing_values(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,y\n1,,0\n2,5,1\n,6,0\n4,7,1\n5,8,0\n6,9,1\n7,1,0\n8,2,1\n")
    model = spec("classification", {"kind": "csv", "path": "d.csv", "target": "y"},
                 "sklearn.linear_model.LogisticRegression",
                 preprocess={"impute": "median", "test_size": 0.5})
    table = load_dataset(model.dataset, model.task, tmp_path)
    assert int(table.frame.isna().sum().sum()) == 2
    split = prepare(table, model)
    pipeline = fitted(model, split)
    features = pipeline[:-1]  # raw rows -> what the estimator sees
    assert not np.isnan(features.transform(split.X_train)).any()
    assert not np.isnan(features.transform(split.X_test)).any()


def test_tampered_model_types_are_refused() -> None:
    est = build_estimator(EstimatorSpec(class_path="sklearn.tree.DecisionTreeClassifier"),
                          "classification", ALLOWED)
    data = dump_model(est.fit([[0], [1]], [0, 1]))
    with pytest.raises(PipelineError, match="outside the allow-list"):
        load_model(data, ["nothing."])


def test_regression_target_must_be_numeric(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,y\n1,x\n2,z\n")
    with pytest.raises(PipelineError, match="dataset.target"):
        load_dataset(CsvDataset(kind="csv", path="d.csv", target="y"), "regression", tmp_path)


def test_model_files_are_skops_files_whose_schema_is_written_compact() -> None:
    import io
    import json
    import zipfile

    import skops.io as sio
    from sklearn.ensemble import RandomForestRegressor

    from workers.pipeline.train import dump_model, load_model

    def schema(data: bytes) -> Any:
        def strip(node: Any) -> Any:  # skops names nodes and array files by object id
            if isinstance(node, dict):
                return {k: strip(v) for k, v in node.items() if k not in ("__id__", "file")}
            return [strip(v) for v in node] if isinstance(node, list) else node
        return strip(json.loads(zipfile.ZipFile(io.BytesIO(data)).read("schema.json")))

    rng = np.random.default_rng(0)
    X, y = rng.random((60, 4)), rng.random(60)
    model = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(X, y)
    ours = dump_model(model)
    # The same document skops writes, without its indentation ...
    assert schema(ours) == schema(sio.dumps(model))
    assert b"\n  " not in zipfile.ZipFile(io.BytesIO(ours)).read("schema.json")
    # ... read back by skops' own loader, behind our allow-list, to the same predictions.
    assert np.array_equal(load_model(ours, ["sklearn."]).predict(X), model.predict(X))
    assert np.array_equal(sio.loads(ours, trusted=sio.get_untrusted_types(data=ours)).predict(X),
                          model.predict(X))


def test_plot_data_holds_the_confusion_matrix_or_residual_sample_and_top_importances() -> None:
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge

    from workers.pipeline.evaluate import TOP_FEATURES, plot_data

    X, y = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    pred = forest.predict(X)
    data = plot_data(forest, "classification", y, pred)
    assert data["labels"] == [0, 1, 2] and np.asarray(data["confusion"]).sum() == len(y)
    assert np.trace(np.asarray(data["confusion"])) == int((pred == y).sum())
    imp = data["importances"]
    assert imp["kind"] == "importance" and len(imp["features"]) == 4
    assert [v for _, v in imp["features"]] == pytest.approx(sorted(forest.feature_importances_, reverse=True),
                                                            abs=1e-6)

    Xd, yd = load_diabetes(return_X_y=True)
    ridge = Ridge().fit(Xd, yd)
    data = plot_data(ridge, "regression", yd, ridge.predict(Xd))
    assert 100 < len(data["y_true"]) == len(data["y_pred"]) <= 300
    assert data["importances"]["kind"] == "coefficient"
    assert len(data["importances"]["features"]) == min(TOP_FEATURES, Xd.shape[1])
    assert abs(data["importances"]["features"][0][1]) == pytest.approx(max(abs(ridge.coef_)), abs=1e-6)


def test_forest_importances_match_scikit_learns() -> None:
    from sklearn.datasets import load_wine
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestRegressor

    from workers.pipeline.evaluate import importances

    X, y = load_wine(return_X_y=True)
    for forest in (ExtraTreesClassifier(n_estimators=15, random_state=1).fit(X, y),
                   RandomForestRegressor(n_estimators=15, random_state=1).fit(X, y.astype(float))):
        got = dict(importances(forest)["features"])  # type: ignore[index]
        assert len(got) == X.shape[1]
        assert [got[f"x{i}"] for i in range(X.shape[1])] == pytest.approx(forest.feature_importances_,
                                                                            abs=1e-6)


def test_importances_of_a_search_come_from_its_best_model_and_bagging_has_none() -> None:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import BaggingClassifier
    from sklearn.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    from workers.pipeline.evaluate import importances

    X, y = load_iris(return_X_y=True)
    search = GridSearchCV(DecisionTreeClassifier(random_state=0), {"max_depth": [2, 3]}, cv=2).fit(X, y)
    got = dict(importances(search)["features"])  # type: ignore[index]
    assert [got[f"x{i}"] for i in range(4)] == pytest.approx(
        search.best_estimator_.feature_importances_, abs=1e-6)
    # Each bagged tree sees half the features: no importances rather than wrong ones.
    bagged = BaggingClassifier(DecisionTreeClassifier(), n_estimators=4, max_features=0.5,
                               random_state=0).fit(X, y)
    assert importances(bagged) is None
