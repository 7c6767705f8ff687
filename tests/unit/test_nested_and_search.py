"""Nested estimators, hyperparameter search and the team's own code, as plain functions and
through the spec loader: no Redis, no workers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_diabetes, load_iris

from producer.cli import main
from producer.spec import SpecError
from tests.conftest import EXAMPLE_DATA, REPO, load, write_spec
from workers.contracts import MAX_SEARCH_TRIALS, EstimatorSpec, ModelSpec, SearchSpec
from workers.pipeline.errors import PipelineError
from workers.pipeline.estimators import build_estimator
from workers.pipeline.search import MAX_TRIALS_RECORDED, build_search, run_search
from workers.pipeline.train import dump_model, load_model
from workers.settings import Settings
from workers.usercode import class_paths, code_versions, source_hash

ALLOWED = ["sklearn."]
TEAMCODE = REPO / "examples" / "teamcode"
SETTINGS = Settings(data_root=EXAMPLE_DATA)


def est(class_path: str, **params: Any) -> dict[str, Any]:
    return {"class_path": class_path, "params": params}


SCALER = est("sklearn.preprocessing.StandardScaler")
LOGREG = est("sklearn.linear_model.LogisticRegression", max_iter=300)
TREE = est("sklearn.tree.DecisionTreeClassifier", max_depth=3, random_state=0)
KNN = est("sklearn.neighbors.KNeighborsClassifier", n_neighbors=5)
PIPELINE = est("sklearn.pipeline.Pipeline", steps=[["scale", SCALER], ["model", LOGREG]])

META = {
    "pipeline": ("classification", PIPELINE),
    "grid_search": ("classification", est("sklearn.model_selection.GridSearchCV", estimator=TREE,
                                          param_grid={"max_depth": [1, 3]}, cv=3)),
    "voting": ("classification", est("sklearn.ensemble.VotingClassifier",
                                     estimators=[["knn", KNN], ["tree", TREE]], voting="soft")),
    "stacking": ("regression", est("sklearn.ensemble.StackingRegressor", cv=3, estimators=[
        ["ridge", est("sklearn.linear_model.Ridge")],
        ["tree", est("sklearn.tree.DecisionTreeRegressor", max_depth=3, random_state=0)]],
        final_estimator=est("sklearn.linear_model.LinearRegression"))),
    "one_vs_rest": ("classification", est("sklearn.multiclass.OneVsRestClassifier", estimator=PIPELINE)),
    "column_transformer": ("regression", est("sklearn.pipeline.Pipeline", steps=[
        ["cols", est("sklearn.compose.ColumnTransformer", remainder="passthrough",
                     transformers=[["scaled", SCALER, [0, 1, 2]]])],
        ["model", est("sklearn.linear_model.Ridge", alpha=0.5)]])),
}


def data(task: str) -> tuple[np.ndarray, np.ndarray]:
    return load_iris(return_X_y=True) if task == "classification" else load_diabetes(return_X_y=True)


@pytest.mark.parametrize("kind", sorted(META))
def test_meta_estimators_build_fit_and_load_back_from_skops(kind: str) -> None:
    task, spec = META[kind]
    model = build_estimator(EstimatorSpec.model_validate(spec), task, ALLOWED)
    X, y = data(task)
    fitted = model.fit(X, y)
    again = load_model(dump_model(fitted), ALLOWED)
    assert type(again) is type(fitted)
    assert np.array_equal(again.predict(X), fitted.predict(X))
    assert fitted.score(X, y) > (0.8 if task == "classification" else 0.3)


def test_named_lists_become_tuples_and_plain_lists_stay_lists() -> None:
    spec = est("sklearn.pipeline.Pipeline", steps=[
        ["onehot", est("sklearn.preprocessing.OneHotEncoder", categories=[["a", "b"], ["c", "d"]])],
        ["skip", "passthrough"], ["model", LOGREG]])
    pipe = build_estimator(EstimatorSpec.model_validate(spec), "classification", ALLOWED)
    assert [type(s) for s in pipe.steps] == [tuple, tuple, tuple]
    assert pipe.steps[1] == ("skip", "passthrough")
    assert pipe.steps[0][1].categories == [["a", "b"], ["c", "d"]]


BAD = [
    (est("sklearn.ensemble.VotingClassifier", estimators=[["lr", LOGREG], ["x", est("os.system")]]),
     "estimator.params.estimators[1][1].class_path", "not under an allowed prefix"),
    (est("sklearn.pipeline.Pipeline", steps=[["s", SCALER], ["m", est("sklearn.svm.SVC", nope=1)]]),
     "estimator.params.steps[1][1].params.nope", "unknown parameter"),
    (est("sklearn.multiclass.OneVsRestClassifier", estimator=est("sklearn.svm.SVC", C=-1)),
     "estimator.params.estimator.params", "'C' parameter of SVC"),
    (est("sklearn.pipeline.Pipeline"), "estimator.params.steps", "missing 1 required"),
    (est("sklearn.pipeline.Pipeline", steps=[["m", LOGREG], ["s", SCALER]]),
     "estimator.params.steps", "intermediate steps should be transformers"),
    (est("sklearn.pipeline.Pipeline", steps=[["m", LOGREG]], memory="/tmp/cache"),
     "estimator.params.memory", "pickles"),
    (est("sklearn.multiclass.OneVsRestClassifier", estimator={"class_path": "sklearn.svm.SVC", "parms": {}}),
     "estimator.params.estimator.parms", "unknown key"),
    (est("sklearn.model_selection.GridSearchCV", estimator=TREE,
         param_grid={"max_depth": [est("sklearn.utils._testing.subprocess.Popen")]}),
     "estimator.params.param_grid.max_depth[0].class_path", "must be a public dotted path"),
    (est("sklearn.pipeline.Pipeline", steps=[["s", SCALER], ["m", est("sklearn.linear_model.Ridge")]]),
     "estimator.class_path", "is not a classifier"),
]


@pytest.mark.parametrize(("spec", "field", "message"), BAD, ids=[b[1] for b in BAD])
def test_nested_problems_name_their_field_path(spec: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(PipelineError) as info:
        build_estimator(EstimatorSpec.model_validate(spec), "classification", ALLOWED)
    assert info.value.field == field and message in info.value.message


def model_spec(task: str = "classification", estimator: dict[str, Any] = PIPELINE,
               **over: Any) -> dict[str, Any]:
    dataset = "iris" if task == "classification" else "diabetes"
    return {"name": "m", "task": task, "dataset": {"kind": "sklearn", "name": dataset},
            "estimator": estimator, **over}


def test_a_spec_with_a_bad_nested_class_is_refused_at_submit_with_exit_2(tmp_path: Path) -> None:
    voting = est("sklearn.ensemble.VotingClassifier", estimators=[["lr", LOGREG], ["x", est("os.system")]])
    path = write_spec(tmp_path, {"name": "b", "models": [
        model_spec(), model_spec(estimator=voting) | {"name": "bad"}]})
    # No broker is configured: validation refuses the batch before anything connects.
    result = CliRunner().invoke(main, ["submit", str(path)])
    assert result.exit_code == 2, result.output
    assert "model 'bad' (models[1])" in result.output
    assert "field 'estimator.params.estimators[1][1].class_path'" in result.output
    assert "Traceback" not in result.output and "model 'm'" not in result.output


def test_search_spec_is_checked_at_submit_with_field_paths(tmp_path: Path) -> None:
    def search(**kw: Any) -> dict[str, Any]:
        return {"kind": "grid", "space": {"model__C": [0.1, 1.0]}, **kw}
    with pytest.raises(SpecError) as info:
        load(tmp_path, {"name": "b", "models": [
            model_spec(search=search(space={"model__nope": [1]})) | {"name": "a"},
            model_spec(search=search(space={"model__C": [1.0, -1]})) | {"name": "b"},
            model_spec(search=search(space={"model": [LOGREG, est("os.system")]})) | {"name": "c"},
            model_spec(search=search(metric="mae")) | {"name": "d"},
            model_spec(search=search(space={"model__C": list(range(1, 40)),
                                            "model__tol": list(range(1, 40))})) | {"name": "e"},
            model_spec(search=search(space={"model__C": []})) | {"name": "f"},
        ]}, SETTINGS)
    text = str(info.value)
    assert "model 'a' (models[0]): field 'search.space.model__nope'" in text
    assert "model 'b' (models[1]): field 'search.space.model__C[1]'" in text and "'C' parameter" in text
    assert "model 'c' (models[2]): field 'search.space.model[1].class_path'" in text
    assert "model 'd' (models[3]): field 'search.metric'" in text and "not a classification metric" in text
    assert "model 'e' (models[4]): field 'search'" in text and f"maximum {MAX_SEARCH_TRIALS}" in text
    assert "model 'f' (models[5]): field 'search.space.model__C'" in text


def test_search_in_defaults_is_replaced_whole_by_a_models_own(tmp_path: Path) -> None:
    batch = load(tmp_path, {"name": "b", "defaults": {"search": {"space": {"model__C": [1, 2]}, "cv": 4}},
                            "models": [model_spec(name="x", search={"space": {"model__tol": [0.1]}}),
                                       model_spec() | {"name": "y"}]}, SETTINGS)
    x, y = batch.models
    assert x.search is not None and x.search.space == {"model__tol": [0.1]} and x.search.cv == 3
    assert y.search is not None and y.search.space == {"model__C": [1, 2]} and y.search.cv == 4
    assert "|search:2x4" in y.cost_class and "search" not in model_spec_obj().cost_class


def model_spec_obj(**over: Any) -> ModelSpec:
    return ModelSpec.model_validate(model_spec(**over))


def searched(task: str, estimator: dict[str, Any], metric: str, **search: Any) -> tuple[Any, dict[str, Any]]:
    spec = SearchSpec.model_validate(search)
    built = build_estimator(EstimatorSpec.model_validate(estimator), task, ALLOWED)
    X, y = data(task)
    return run_search(build_search(built, spec, metric, task, ALLOWED), X, y)


def test_grid_search_deploys_the_refitted_best_and_records_every_trial_best_first() -> None:
    best, report = searched("classification", TREE, "accuracy",
                            space={"max_depth": [1, 2, 4], "criterion": ["gini", "entropy"]}, cv=3)
    assert report["n_trials"] == 6 and len(report["trials"]) == 6
    means = [t["mean"] for t in report["trials"]]
    assert means == sorted(means, reverse=True) and report["best_score"] == means[0]
    assert report["trials"][0]["params"] == report["best_params"]
    assert best.get_params()["max_depth"] == report["best_params"]["max_depth"]
    X, y = data("classification")
    assert best.tree_.n_node_samples[0] == len(y)  # refitted on all the rows it was given
    assert report["seconds"] > 0 and report["kind"] == "GridSearchCV"


def test_error_metrics_are_reported_in_their_own_units_lower_first() -> None:
    _, report = searched("regression", est("sklearn.linear_model.Ridge"), "mae",
                         space={"alpha": [0.01, 1.0, 100.0]}, cv=3)
    means = [t["mean"] for t in report["trials"]]
    assert all(m > 0 for m in means) and means == sorted(means)
    assert report["metric"] == "mae" and report["best_score"] == min(means)


def test_random_search_is_seeded_and_samples_n_iter_candidates() -> None:
    space = {"max_depth": [1, 2, 3, 4, 5], "min_samples_leaf": [1, 2, 4, 8]}
    runs = [searched("classification", TREE, "f1_macro", kind="random", space=space, n_iter=4, seed=s)[1]
            for s in (1, 1, 2)]
    assert [r["n_trials"] for r in runs] == [4, 4, 4]
    picked = [sorted(str(t["params"]) for t in r["trials"]) for r in runs]
    assert picked[0] == picked[1] and picked[0] != picked[2]


def test_a_search_over_estimators_records_them_as_the_spec_wrote_them() -> None:
    _, report = searched("classification", PIPELINE, "accuracy",
                         space={"model": [KNN, TREE], "scale": [SCALER, "passthrough"]}, cv=3)
    assert report["best_params"]["model"] in (KNN, TREE)
    assert {str(t["params"]["scale"]) for t in report["trials"]} == {str(SCALER), "passthrough"}


def test_the_trial_table_is_capped() -> None:
    _, report = searched("classification", est("sklearn.tree.DecisionTreeClassifier", random_state=0),
                         "accuracy", space={"max_depth": list(range(1, 31)), "splitter": ["best", "random"]},
                         cv=2)
    assert report["n_trials"] == 60 and len(report["trials"]) == MAX_TRIALS_RECORDED


# --- the team's own code ---------------------------------------------------------------------

def test_class_paths_are_found_at_every_depth_of_estimator_and_search() -> None:
    model = model_spec_obj(estimator=est("sklearn.ensemble.VotingClassifier", estimators=[
        ["a", est("teamcode.A")], ["b", est("sklearn.pipeline.Pipeline", steps=[["c", est("other.C")]])]]),
        search={"space": {"a": [est("third.D")]}})
    assert class_paths(model) == {"sklearn.ensemble.VotingClassifier", "teamcode.A",
                                  "sklearn.pipeline.Pipeline", "other.C", "third.D"}


def test_code_versions_use_the_distribution_or_a_hash_of_the_sources(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import skops

    # scikit-learn is keyed by its version elsewhere; an installed library by its distribution's.
    assert code_versions(["sklearn.svm.SVC"]) == {}
    assert code_versions(["skops.io.X"]) == {"skops": f"skops=={skops.__version__}"}
    # On PYTHONPATH (not installed): a hash of the package's source files, which an edit changes.
    copy = tmp_path / "teamcode"
    shutil.copytree(TEAMCODE / "teamcode", copy)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "teamcode", raising=False)
    before = source_hash("teamcode")
    assert code_versions(["teamcode.regressors.ShrunkLinearRegressor"]) == {"teamcode": f"sha256:{before}"}
    with (copy / "regressors.py").open("a") as fh:
        fh.write("# an edit\n")
    assert source_hash("teamcode") != before


def test_a_team_class_outside_the_allow_list_is_refused_at_submit(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TEAMCODE))
    pipe = est("sklearn.pipeline.Pipeline", steps=[
        ["clip", est("teamcode.transformers.QuantileClipper")],
        ["model", est("teamcode.regressors.ShrunkLinearRegressor", shrink=0.5)]])
    spec = {"name": "team", "models": [model_spec("regression", pipe)]}
    path = write_spec(tmp_path, spec)
    result = CliRunner().invoke(main, ["submit", str(path)])
    assert result.exit_code == 2, result.output
    assert "field 'estimator.params.steps[0][1].class_path'" in result.output
    assert "not under an allowed prefix" in result.output
    # Allowed by prefix, the same spec loads (and a bad param of a team class is still refused).
    allowed = Settings(data_root=EXAMPLE_DATA, allowed_estimator_prefixes=["sklearn.", "teamcode."])
    assert [m.name for m in load(tmp_path, spec, allowed).models] == ["m"]
    bad = est("teamcode.regressors.ShrunkLinearRegressor", shrinkage=1)
    with pytest.raises(SpecError, match=r"field 'estimator.params.shrinkage'"):
        load(tmp_path, {"name": "team", "models": [model_spec("regression", bad)]}, allowed)


def test_the_example_specs_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.spec import load_batch

    search = load_batch(REPO / "examples" / "search.yaml", SETTINGS)
    assert sum(m.search is not None for m in search.models) == 2 and len(search.models) == 5
    monkeypatch.syspath_prepend(str(TEAMCODE))
    allowed = Settings(data_root=EXAMPLE_DATA, allowed_estimator_prefixes=["sklearn.", "teamcode."])
    team = load_batch(REPO / "examples" / "teamcode.yaml", allowed)
    assert class_paths(team.models[0]) >= {"teamcode.transformers.QuantileClipper"}
