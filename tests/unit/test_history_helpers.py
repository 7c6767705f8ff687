"""Pure helpers of the history commands, the store's JSON copies and the fitted features."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from producer.history import parse_age, parse_tags
from workers.contracts import ModelSpec
from workers.journal import FileJournal as Journal
from workers.pipeline.data import load_dataset
from workers.pipeline.estimators import build_estimator
from workers.pipeline.features import build_model
from workers.pipeline.preprocess import prepare
from workers.pipeline.train import dump_model, load_model
from workers.tracking import has_tags


@pytest.mark.parametrize(("text", "seconds"), [("7d", 7 * 86400), ("12h", 43200), ("30m", 1800),
                                               ("45s", 45), ("90", 90), ("1.5h", 5400), ("2w", 1209600)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7x", "seven days", "-1d", "-5", "nan", "inf", "1e400d"])
def test_parse_age_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="not an age"):
        parse_age(text)


def test_parse_tags_and_matching() -> None:
    tags = parse_tags(("region=eu", "family=tree", "note=a=b"))
    assert tags == {"region": "eu", "family": "tree", "note": "a=b"}
    assert has_tags({"tags": {"region": "eu", "family": "tree", "note": "a=b", "x": "1"}}, tags)
    assert not has_tags({"tags": {"region": "us"}}, {"region": "eu"})
    assert has_tags({}, None) and has_tags({"tags": {}}, {})
    for bad in ("region", "=eu"):
        with pytest.raises(ValueError, match="key=value"):
            parse_tags((bad,))


def test_journal_appends_whole_lines_per_process_and_skips_a_torn_tail(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([{"kind": "run", "n": 1}, {"kind": "state", "n": 2}])
    journal.append([])
    journal.append([{"kind": "run", "n": 3}])
    files = list((tmp_path / "journal").glob("*.jsonl"))
    assert len(files) == 1
    # A writer killed mid-line leaves a torn last line: replay skips it, keeps the rest.
    with files[0].open("a") as fh:
        fh.write('{"kind": "run", "n": 4')
    assert [r["n"] for r in journal.replay()] == [1, 2, 3]
    assert [r["n"] for r in Journal(tmp_path).replay("run")] == [1, 3]


def test_a_forked_child_writes_its_own_journal_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([{"kind": "run", "who": "parent"}])
    pid = os.fork()
    if pid == 0:  # the child: what a prefork pool child does with the parent's Runtime
        journal.append([{"kind": "run", "who": "child"}])
        os._exit(0)
    os.waitpid(pid, 0)
    files = sorted((tmp_path / "journal").glob("*.jsonl"))
    assert len(files) == 2
    assert sorted(r["who"] for r in journal.replay()) == ["child", "parent"]


def _wine(**preprocess: object) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": "wine", "task": "classification", "dataset": {"kind": "sklearn", "name": "wine"},
        "preprocess": {"seed": 3, **preprocess},
        "estimator": {"class_path": "sklearn.linear_model.LogisticRegression"}})


def test_the_model_file_holds_the_fitted_features_for_serving() -> None:
    model = _wine()
    split = prepare(load_dataset(model.dataset, model.task, Path(".")), model)
    estimator = build_estimator(model.estimator, model.task, ["sklearn."])
    fitted = build_model(model, list(split.X_train.columns), estimator).fit(split.X_train, split.y_train)
    numeric = fitted.named_steps["features"]  # all numeric: imputer and scaler on arrays
    assert [name for name, _ in numeric.steps] == ["impute", "scale"]
    # Round trip through skops: the loaded Pipeline predicts from raw rows as in training.
    loaded = load_model(dump_model(fitted), ["sklearn."])
    assert np.array_equal(loaded.predict(split.X_test), fitted.predict(split.X_test))
    # Plain arrays (columns in training order) still work, as before features existed.
    assert np.array_equal(loaded.predict(split.X_test.to_numpy()), fitted.predict(split.X_test))
    with pytest.raises(ValueError, match="expected rows of 13 columns"):
        loaded.predict(split.X_test.to_numpy()[:, :3])
    # Scaled on the training rows only: their mean is 0 after the fitted scaler.
    assert np.allclose(numeric.transform(split.X_train.to_numpy()).mean(axis=0), 0, atol=1e-9)
    plain = _wine(impute="none", scale="none")
    bare = build_model(plain, list(split.X_train.columns), estimator)
    assert bare.named_steps["features"] == "passthrough"
    # Raw rows with extra columns, in another order: the model picks its own columns.
    shuffled = split.X_test[split.X_test.columns[::-1]].assign(extra="x")
    assert np.array_equal(loaded.predict(shuffled), fitted.predict(split.X_test))
    # The same columns in another order, none extra: still each column by its name.
    reversed_only = split.X_test[split.X_test.columns[::-1]]
    assert np.array_equal(loaded.predict(reversed_only), fitted.predict(split.X_test))
