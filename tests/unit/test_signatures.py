"""The estimator signature table: what it accepts, the real check accepts too; with it a
spec's estimators are checked without importing scikit-learn, with the same messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from sklearn.utils import all_estimators

from producer.signatures import SignatureTable
from producer.spec import SpecError, load_batch
from tests.conftest import REPO, write_spec
from workers.contracts import CLASSIFICATION_METRICS, REGRESSION_METRICS, EstimatorSpec, SearchSpec
from workers.pipeline import signatures
from workers.pipeline.errors import PipelineError
from workers.pipeline.estimators import build_estimator, describe, resolve_class
from workers.pipeline.search import build_search

ALLOWED = ["sklearn."]
# Values a YAML spec may give a param: every type, in and out of the usual ranges.
VALUES: list[Any] = [None, True, False, 0, 1, 2, 3, -1, 2**32, 10**12, 0.0, 0.5, 1.0, 1.5, -0.5, 1e-9,
                     "auto", "balanced", "", "x", [], [1, 2], [0.5, 0.5], {}, {"a": 1}, {"0": 1.0}]


def public_classes() -> list[tuple[str, Any]]:
    """(public class path, class) of every scikit-learn classifier and regressor (as a spec
    names it: the subpackage that exports it, sklearn.linear_model.Ridge)."""
    out = []
    for name, cls in all_estimators(type_filter=["classifier", "regressor"]):
        path = f"sklearn.{cls.__module__.split('.')[1]}.{name}"
        if resolve_class(path, ALLOWED) is cls:
            out.append((path, cls))
    return out


def options(entry: dict[str, Any], name: str) -> list[Any]:
    """The values a param's own constraints list (so the table's shortcut is exercised)."""
    found: list[Any] = []
    for c in (entry["constraints"] or {}).get(name, []):
        if isinstance(c, list) and c[0] == "options":
            found += c[3]
    return found


def real(class_path: str, task: str, params: dict[str, Any]) -> PipelineError | None:
    try:
        build_estimator(EstimatorSpec.model_validate({"class_path": class_path, "params": params}),
                        task, ALLOWED)
    except PipelineError as exc:
        return exc
    return None


def test_what_the_table_accepts_the_real_check_accepts_for_every_class_and_param() -> None:
    # Given every classifier and regressor scikit-learn ships, described as the table does
    table, accepted, checked = {}, 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, cls in public_classes():
            entry = describe(cls)
            if entry is not None:
                table[path] = json.loads(json.dumps(entry, allow_nan=False))  # as stored on disk
        assert len(table) > 80  # the common classes are described, not left to the slow path
        for path, entry in table.items():
            task = "classification" if entry["kind"] == "classifier" else "regression"
            for name in entry["params"]:
                for value in VALUES + options(entry, name):
                    # When the table accepts one param's value, then building it accepts it too
                    if signatures.accepts(table, {"class_path": path, "params": {name: value}},
                                          task, ALLOWED):
                        accepted += 1
                        error = real(path, task, {name: value})
                        assert error is None, (path, name, value, error)
                    checked += 1
    assert accepted > checked // 10  # it is a shortcut for a good share of values


@pytest.mark.parametrize(("path", "params"), [
    ("sklearn.linear_model.LogisticRegression", {"C": 0.5, "max_iter": 1000, "penalty": "l2"}),
    ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 10, "max_depth": 4, "random_state": 0}),
    ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 100, "class_weight": "balanced"}),
    ("sklearn.neighbors.KNeighborsClassifier", {"n_neighbors": 5, "weights": "distance"}),
    ("sklearn.svm.SVC", {"C": 1.0, "kernel": "rbf", "probability": True})])
def test_the_usual_estimators_are_accepted_from_the_table(path: str, params: dict[str, Any]) -> None:
    entry = describe(type(build_estimator(EstimatorSpec(class_path=path), "classification", ALLOWED)))
    assert entry is not None
    spec = {"class_path": path, "params": params}
    assert signatures.accepts({path: entry}, spec, "classification", ALLOWED)
    # ... and what it cannot prove is left to the real check: a wrong kind, value, name or class
    for other, task in [({"C": -1}, "classification"), ({"nope": 1}, "classification"),
                        ({}, "regression"), ({"estimator": {"class_path": path}}, "classification")]:
        assert not signatures.accepts({path: entry}, {"class_path": path, "params": other}, task, ALLOWED)
    assert not signatures.accepts({path: entry}, {"class_path": path}, "classification", ["other."])


def test_a_search_the_table_accepts_builds() -> None:
    path = "sklearn.linear_model.Ridge"
    entry = describe(type(build_estimator(EstimatorSpec(class_path=path), "regression", ALLOWED)))
    assert entry is not None
    for space, metric in [({"alpha": [0.1, 1.0, 10]}, "mae"), ({"alpha": [0.1, -1.0]}, "mae"),
                          ({"alpha": [1.0]}, "accuracy"), ({"fit_intercept": [True, False]}, "r2"),
                          ({"solver": ["auto", "svd", "nope"]}, "r2")]:
        ok = signatures.accepts({path: entry}, {"class_path": path}, "regression", ALLOWED,
                                {"metric": metric, "space": space}, REGRESSION_METRICS)
        estimator = build_estimator(EstimatorSpec(class_path=path), "regression", ALLOWED)
        try:
            build_search(estimator, SearchSpec(kind="grid", space=space), metric, "regression", ALLOWED)
            passed = True
        except PipelineError:
            passed = False
        assert ok == passed, (space, metric)
    assert "accuracy" in CLASSIFICATION_METRICS


CHECK = """
import json, sys
from producer.spec import SpecError, load_batch
from workers.settings import Settings
try:
    n = len(load_batch(sys.argv[1], Settings(check_cache_dir=sys.argv[2])).models)
    print(json.dumps({"models": n, "sklearn": "sklearn" in sys.modules}))
except SpecError as exc:
    print(json.dumps({"error": str(exc), "sklearn": "sklearn" in sys.modules}))
"""


def check_in_a_new_process(spec: Path, table_dir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHECK, str(spec), str(table_dir)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True,
                         env=None if env is None else {**os.environ, **env})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_a_second_submit_checks_the_same_estimators_without_importing_scikit_learn(tmp_path: Path) -> None:
    table_dir = tmp_path / "signatures"
    quickstart = REPO / "examples" / "quickstart.yaml"
    # Given a first check, which imports scikit-learn and writes down the classes it met
    first = check_in_a_new_process(quickstart, table_dir)
    assert first == {"models": 12, "sklearn": True}
    assert len(list(table_dir.glob("sklearn-*.json"))) == 1
    # When the same spec is checked again in a new process, then scikit-learn stays unimported
    assert check_in_a_new_process(quickstart, table_dir) == {"models": 12, "sklearn": False}
    # ... and so does a spec with other values for those classes
    text = quickstart.read_text().replace("C: 1.0", "C: 3.5").replace("n_estimators: 200", "n_estimators: 7")
    assert "C: 3.5" in text and "n_estimators: 7" in text
    other = tmp_path / "other.yaml"
    other.write_text(text)
    assert check_in_a_new_process(other, table_dir) == {"models": 12, "sklearn": False}
    # A bad value takes the real check: the same message as without any table
    bad = tmp_path / "bad.yaml"
    bad.write_text(quickstart.read_text().replace("C: 1.0", "C: -1.0"))
    with_table = check_in_a_new_process(bad, table_dir)
    without = check_in_a_new_process(bad, tmp_path / "empty")
    assert with_table["sklearn"] and "'C' parameter of LogisticRegression" in with_table["error"]
    assert with_table["error"] == without["error"]


@pytest.mark.slow
def test_a_team_pipeline_checked_before_on_the_same_code_is_not_checked_again(tmp_path: Path) -> None:
    """The team's own classes inside a Pipeline, searched (examples/teamcode.yaml): no
    signature vouches for them, so the whole check is remembered, keyed by the team's code."""
    code = tmp_path / "code"
    shutil.copytree(REPO / "examples" / "teamcode" / "teamcode", code / "teamcode")
    env = {"PYTHONPATH": os.pathsep.join([str(code), str(REPO)]),
           "MODELFLEET_ALLOWED_ESTIMATOR_PREFIXES": '["sklearn.", "teamcode."]'}
    spec, table_dir = REPO / "examples" / "teamcode.yaml", tmp_path / "signatures"
    assert check_in_a_new_process(spec, table_dir, env) == {"models": 1, "sklearn": True}
    # Given the same spec on the same code, then nothing imports scikit-learn
    assert check_in_a_new_process(spec, table_dir, env) == {"models": 1, "sklearn": False}
    # An edit of the team's code is a new key: the real check runs again, then is remembered
    regressors = code / "teamcode" / "regressors.py"
    regressors.write_text(regressors.read_text() + "\n# edited\n")
    assert check_in_a_new_process(spec, table_dir, env) == {"models": 1, "sklearn": True}
    assert check_in_a_new_process(spec, table_dir, env) == {"models": 1, "sklearn": False}
    # Other values are another spec: a bad one takes the real check, its message, every time
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("model__shrink:", "model__shrinkage:"))
    for _ in range(2):
        refused = check_in_a_new_process(bad, table_dir, env)
        assert refused["sklearn"] and "shrinkage" in refused["error"]
    assert refused["error"] == check_in_a_new_process(bad, tmp_path / "empty", env)["error"]


def test_a_damaged_or_unwritable_table_only_costs_the_import(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"name": "b", "models": [{
        "name": "m", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
        "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 2}}}]})
    from workers.settings import Settings

    table_dir = tmp_path / "signatures"
    load_batch(spec, Settings(check_cache_dir=table_dir))
    (stored,) = table_dir.glob("*.json")
    stored.write_text("{not json")
    assert len(load_batch(spec, Settings(check_cache_dir=table_dir)).models) == 1
    assert "sklearn.tree.DecisionTreeClassifier" in json.loads(stored.read_text())["classes"]
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the directory should be
    assert len(load_batch(spec, Settings(check_cache_dir=blocked / "sub")).models) == 1
    assert SignatureTable.open(None).path is None
    with pytest.raises(SpecError, match="max_depth"):
        load_batch(write_spec(tmp_path, {"name": "b", "models": [{
            "name": "m", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
            "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                          "params": {"max_depth": -2}}}]}, "bad.yaml"), Settings(check_cache_dir=table_dir))
