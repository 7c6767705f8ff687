"""Spec loading, matrix and segment expansion, and named validation errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from producer.spec import SpecError, load_batch
from tests.conftest import EXAMPLE_DATA, REPO, load, write_spec
from workers.contracts import CsvDataset
from workers.settings import Settings

SETTINGS = Settings(data_root=EXAMPLE_DATA)


def model(name: str = "m1", **over: Any) -> dict[str, Any]:
    base = {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
            "estimator": {"class_path": "sklearn.linear_model.LogisticRegression",
                          "params": {"max_iter": 200}}}
    return {**base, **over}


def problems(tmp_path: Path, spec: dict[str, Any], settings: Settings = SETTINGS) -> str:
    with pytest.raises(SpecError) as info:
        load(tmp_path, spec, settings)
    return str(info.value)


def test_example_expands_to_twelve_models_over_three_datasets_and_four_estimators() -> None:
    batch = load_batch(REPO / "examples" / "quickstart.yaml", SETTINGS)
    assert len(batch.models) == 12
    assert {m.dataset.name for m in batch.models} == {"iris", "wine", "breast_cancer"}  # type: ignore[union-attr]
    assert len({m.estimator.class_path for m in batch.models}) == 4
    assert "iris-forest" in {m.name for m in batch.models}
    # defaults merge into each model
    assert all(m.preprocess.seed == 7 and m.tags["team"] == "demo" for m in batch.models)
    # the matrix axis labels become tags
    forest = next(m for m in batch.models if m.name == "iris-forest")
    assert forest.tags == {"dataset": "iris", "estimator": "forest", "team": "demo"}


def test_explicit_tags_win_over_matrix_axis_labels(tmp_path: Path) -> None:
    spec = {"name": "b", "defaults": model(tags={"preprocess": "pinned", "team": "x"}),
            "matrix": {"name": "m-{preprocess}",
                       "axes": {"preprocess": {"s1": {"seed": 1}, "s2": {"seed": 2}}}}}
    batch = load(tmp_path, spec, SETTINGS)
    assert [m.tags for m in batch.models] == [{"preprocess": "pinned", "team": "x"}] * 2


def test_unknown_field_is_named_with_file_and_model(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"name": "b", "models": [model(colour="red")]})
    assert "batch.yaml" in msg and "model 'm1'" in msg and "'colour'" in msg


def test_missing_and_wrongly_typed_fields(tmp_path: Path) -> None:
    bad = model()
    del bad["task"]
    msg = problems(tmp_path, {"name": "b", "models": [bad, model("m2", preprocess={"test_size": "x"})]})
    assert "model 'm1'" in msg and "'task'" in msg
    assert "model 'm2'" in msg and "preprocess.test_size" in msg


def test_duplicate_names(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"name": "b", "models": [model("same"), model("same")]})
    assert "duplicate model name" in msg and "'same'" in msg


@pytest.mark.parametrize("path", ["os.system", "subprocess.Popen", "builtins.eval",
                                  "sklearn.base.os", "sklearn.utils._testing.subprocess.Popen"])
def test_estimator_outside_allow_list(tmp_path: Path, path: str) -> None:
    msg = problems(tmp_path, {"name": "b", "models": [model(estimator={"class_path": path})]})
    assert "estimator.class_path" in msg and "model 'm1'" in msg


def test_unknown_and_invalid_estimator_params(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"name": "b", "models": [
        model("a", estimator={"class_path": "sklearn.svm.SVC", "params": {"nope": 1}}),
        model("b", estimator={"class_path": "sklearn.svm.SVC", "params": {"C": -1}})]})
    assert "model 'a'" in msg and "estimator.params.nope" in msg
    assert "model 'b'" in msg and "estimator.params" in msg


def test_class_path_typo_suggests_the_closest_estimator(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"name": "b", "models": [
        model(estimator={"class_path": "sklearn.ensemble.RandomForestClassifer"}),
        model("far", estimator={"class_path": "sklearn.ensemble.Xyzzy"})]})
    line = next(p for p in msg.splitlines() if "model 'm1'" in p)
    assert "estimator.class_path" in line
    assert "did you mean sklearn.ensemble.RandomForestClassifier?" in line
    assert "did you mean" not in next(p for p in msg.splitlines() if "model 'far'" in p)


def test_estimator_must_fit_task(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"name": "b", "models": [
        model(estimator={"class_path": "sklearn.linear_model.LinearRegression"})]})
    assert "is not a classifier" in msg


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: b\nmodels: [\n  - {name: x\n")
    with pytest.raises(SpecError) as info:
        load_batch(path, SETTINGS)
    assert "bad.yaml" in str(info.value) and "malformed YAML" in str(info.value)


@pytest.mark.parametrize("name", ["../etc", "Upper", "a/b", "", "x" * 81, "a..b", "-lead"])
def test_unsafe_model_names(tmp_path: Path, name: str) -> None:
    assert "'name'" in problems(tmp_path, {"name": "b", "models": [model(name)]})


def test_matrix_past_maximum_is_refused_before_expanding(tmp_path: Path) -> None:
    axis = {f"v{i}": {"kind": "sklearn", "name": "iris"} for i in range(100)}
    spec = {"name": "b", "defaults": model(), "matrix": {"name": "{dataset}-{seed}", "axes": {
        "dataset": axis, "seed": {f"s{i}": {"seed": i} for i in range(200)}}}}
    msg = problems(tmp_path, spec, Settings(max_models_per_batch=1000))
    assert "matrix.axes" in msg and "20000" in msg


def test_matrix_name_with_unknown_axis(tmp_path: Path) -> None:
    spec = {"name": "b", "defaults": model(), "matrix": {"name": "{nope}",
                                                         "axes": {"preprocess": {"a": {}}}}}
    assert "matrix.name" in problems(tmp_path, spec)


def csv_model(tmp: Path, **dataset: Any) -> dict[str, Any]:
    return model(task="regression", dataset={"kind": "csv", "target": "y", **dataset},
                 estimator={"class_path": "sklearn.linear_model.Ridge"})


@pytest.mark.parametrize("path,fragment", [
    ("../outside.csv", "escapes the data root"),
    ("/etc/passwd", "must be relative"),
    ("missing.csv", "not found"),
    ("link.csv", "escapes the data root"),
])
def test_csv_paths_cannot_escape_data_root(tmp_path: Path, path: str, fragment: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "outside.csv").write_text("a,y\n1,2\n")
    (root / "link.csv").symlink_to(tmp_path / "outside.csv")
    msg = problems(tmp_path, {"name": "b", "models": [csv_model(tmp_path, path=path)]},
                   Settings(data_root=root))
    assert "dataset.path" in msg and fragment in msg and "model 'm1'" in msg


def test_csv_missing_target_and_nan_only_column(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "t.csv").write_text("a,empty,y\n1,,2\n2,,3\n3,nan,4\n")
    s = Settings(data_root=root)
    msg = problems(tmp_path, {"name": "b", "models": [
        csv_model(tmp_path, path="t.csv", target="nope")]}, s)
    assert "dataset.target" in msg and "'nope'" in msg
    msg = problems(tmp_path, {"name": "b", "models": [csv_model(tmp_path, path="t.csv")]}, s)
    assert "dataset.features" in msg and "'empty'" in msg and "all NaN" in msg


def test_walmart_segments_into_45_store_models(tmp_path: Path) -> None:
    spec = {"name": "walmart", "models": [model(
        "store", task="regression", evaluation={"metrics": ["r2", "mae"]},
        dataset={"kind": "csv", "path": "walmart_weekly_sales.csv", "target": "Weekly_Sales",
                 "segment_by": "Store"},
        estimator={"class_path": "sklearn.ensemble.RandomForestRegressor",
                   "params": {"n_estimators": 20}})]}
    batch = load(tmp_path, spec, SETTINGS)
    assert len(batch.models) == 45
    first = batch.models[0]
    assert first.name == "store-1" and first.tags == {"Store": "1"}
    assert isinstance(first.dataset, CsvDataset) and first.dataset.segment == "1"


def test_empty_batch_and_metric_mismatch(tmp_path: Path) -> None:
    assert "no models" in problems(tmp_path, {"name": "b"})
    msg = problems(tmp_path, {"name": "b", "models": [model(evaluation={"metrics": ["r2"]})]})
    assert "not a classification metric" in msg


def test_spec_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_batch(tmp_path / "nope.yaml", SETTINGS)
    assert "nope.yaml" in str(info.value)


def test_written_spec_round_trips(tmp_path: Path) -> None:
    path = write_spec(tmp_path, {"name": "b", "models": [model()]})
    assert load_batch(path, SETTINGS).source == path.read_text()


def test_priority_cap_and_queue_are_read_and_checked(tmp_path: Path) -> None:
    batch = load(tmp_path, {"name": "b", "priority": "high", "max_parallel": 3,
                            "defaults": {"resources": {"queue": "train-large"}}, "models": [model()]},
                 SETTINGS)
    assert (batch.priority, batch.max_parallel) == ("high", 3)
    assert batch.models[0].resources.queue == "train-large"
    assert batch.models[0].queue_for("train") == batch.models[0].queue_for("evaluate") == "train-large"
    assert batch.models[0].queue_for("preprocess") == "preprocess"
    plain = load(tmp_path, {"name": "b", "models": [model()]}, SETTINGS)
    assert (plain.priority, plain.max_parallel, plain.models[0].resources.queue) == ("normal", None, None)
    assert "field 'priority'" in problems(tmp_path, {"name": "b", "priority": "urgent", "models": [model()]})
    assert "field 'max_parallel'" in problems(tmp_path, {"name": "b", "max_parallel": 0, "models": [model()]})
    text = problems(tmp_path, {"name": "b", "models": [model(resources={"queue": "big:3"})]})
    assert "model 'm1' (models[0]): field 'resources.queue'" in text
