"""Validation reports every problem of a spec in one message, each at its real field path,
and refuses gates that cannot fit the model's task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from producer.spec import SpecError
from tests.conftest import EXAMPLE_DATA, load
from workers.contracts import ModelSpec, threshold_problem
from workers.settings import Settings

SETTINGS = Settings(data_root=EXAMPLE_DATA)


def model(name: str, task: str = "classification", **over: Any) -> dict[str, Any]:
    estimator = ("sklearn.linear_model.LogisticRegression" if task == "classification"
                 else "sklearn.linear_model.Ridge")
    return {"name": name, "task": task, "dataset": {"kind": "sklearn", "name": "iris"},
            "estimator": {"class_path": estimator}, **over}


def refused(tmp_path: Path, spec: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        load(tmp_path, spec, SETTINGS)
    return info.value


def test_bad_matrix_template_is_reported_with_the_models_problems(tmp_path: Path) -> None:
    # Given a bad name template, a model with an unknown field and one with a wrong-task metric
    spec = {"name": "b", "defaults": model("x"),
            "models": [model("a", colour="red"), model("ok"),
                       model("c", task="regression", evaluation={"metrics": ["r2", "accuracy"]})],
            "matrix": {"name": "{nope}", "axes": {"preprocess": {"s1": {"seed": 1}}}}}
    # When it is loaded, then one message names all three, each at its field
    error = refused(tmp_path, spec)
    text = str(error)
    assert error.total == 3, text
    assert "field 'matrix.name'" in text and "unknown axis 'nope'" in text
    assert "model 'a' (models[0]): field 'colour'" in text
    assert "model 'c' (models[2]): field 'evaluation.metrics[1]': metric 'accuracy' is not a " \
           "regression metric" in text
    assert "(root)" not in text


def test_metric_gate_and_primary_mismatches_name_their_fields(tmp_path: Path) -> None:
    error = refused(tmp_path, {"name": "b", "models": [
        model("m", evaluation={"metrics": ["accuracy"], "primary": "f1_macro"},
              deploy={"gate": {"metric": "recall_macro"}})]})
    text = str(error)
    assert "model 'm' (models[0]): field 'evaluation.primary'" in text
    assert "model 'm' (models[0]): field 'deploy.gate.metric'" in text
    assert error.total == 2 and "(root)" not in text


def test_top_level_problems_do_not_hide_the_models_problems(tmp_path: Path) -> None:
    error = refused(tmp_path, {"name": "Bad Name", "pack": 0, "models": [
        model("m", evaluation={"metrics": ["mae"]})]})
    text = str(error)
    assert "field 'name'" in text and "field 'pack." in text
    assert "model 'm' (models[0]): field 'evaluation.metrics[0]'" in text


def test_default_accuracy_style_gate_on_regression_is_refused_naming_defaults(tmp_path: Path) -> None:
    # The issue's case: threshold 0.0 meant for accuracy, applied to a regression model's MAE
    error = refused(tmp_path, {"name": "b", "defaults": {"deploy": {"gate": {"threshold": 0.0}}},
                               "models": [model("clf"),
                                          model("reg", task="regression",
                                                evaluation={"metrics": ["mae", "r2"]})]})
    text = str(error)
    assert error.total == 1, text
    assert "model 'reg' (models[1]): field 'deploy.gate.threshold' (from 'defaults'): 0.0 on 'mae'" \
           in text and "passes only a perfect fit" in text


def test_own_gate_is_not_said_to_come_from_defaults(tmp_path: Path) -> None:
    text = str(refused(tmp_path, {"name": "b", "defaults": {"deploy": {"gate": {"threshold": 0.5}}},
                                  "models": [model("m", deploy={"gate": {"threshold": 1.5}})]}))
    assert "field 'deploy.gate.threshold': 1.5 on 'accuracy'" in text and "outside its range" in text
    assert "from 'defaults'" not in text


@pytest.mark.parametrize("metric,threshold,ok", [
    ("accuracy", 0.0, True), ("accuracy", 1.0, True), ("accuracy", 1.01, False),
    ("f1_macro", -0.1, False), ("r2", -3.0, True), ("r2", 1.2, False),
    ("mae", 100.0, True), ("mae", 0.0, False), ("rmse", -1.0, False), ("mape", 0.2, True)])
def test_threshold_must_fit_the_metric_direction(metric: str, threshold: float, ok: bool) -> None:
    assert (threshold_problem(metric, threshold) is None) == ok


def test_per_task_gates_in_one_batch_are_accepted(tmp_path: Path) -> None:
    batch = load(tmp_path, {"name": "b", "models": [
        model("clf", deploy={"gate": {"threshold": 0.8}}),
        model("reg", task="regression", evaluation={"metrics": ["mae"]},
              deploy={"gate": {"threshold": 30.0}})]}, SETTINGS)
    assert [m.gate_metric for m in batch.models] == ["accuracy", "mae"]


def test_model_spec_outside_the_producer_still_refuses_mismatches_with_paths() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSpec.model_validate(model("m", task="regression", evaluation={"metrics": ["accuracy"]}))
    assert "evaluation.metrics[0]: metric 'accuracy' is not a regression metric" in str(info.value)


def test_fail_on_gate_is_a_spec_option(tmp_path: Path) -> None:
    assert load(tmp_path, {"name": "b", "fail_on_gate": True, "models": [model("m")]},
                SETTINGS).fail_on_gate
    assert not load(tmp_path, {"name": "b", "models": [model("m")]}, SETTINGS).fail_on_gate


def test_split_and_cv_mismatches_name_their_fields(tmp_path: Path) -> None:
    error = refused(tmp_path, {"name": "b", "models": [
        model("r", task="regression", cv={"folds": 3, "kind": "stratified"}),
        model("c", features={"target_transform": "log1p"})]})
    text = str(error)
    assert "model 'r' (models[0]): field 'cv.kind': stratified is for classification" in text
    assert "model 'c' (models[1]): field 'features.target_transform': is for regression" in text
    assert error.total == 2 and "(root)" not in text


def test_gate_on_a_cv_spread_must_be_positive(tmp_path: Path) -> None:
    text = str(refused(tmp_path, {"name": "b", "models": [model(
        "m", cv={"folds": 3}, deploy={"gate": {"metric": "cv_accuracy_std", "threshold": 0.0}})]}))
    assert "field 'deploy.gate.threshold': 0.0 on 'cv_accuracy_std'" in text
