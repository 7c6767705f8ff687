"""Pure helpers of the history commands, the store's JSON copies and the fitted transform."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from producer.history import parse_age, parse_tags
from workers.contracts import PreprocessSpec, SklearnDataset
from workers.journal import Journal
from workers.pipeline.data import load_dataset
from workers.pipeline.preprocess import prepare
from workers.pipeline.train import dump_model, load_model
from workers.tracking import has_tags


@pytest.mark.parametrize(("text", "seconds"), [("7d", 7 * 86400), ("12h", 43200), ("30m", 1800),
                                               ("45s", 45), ("90", 90), ("1.5h", 5400), ("2w", 1209600)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7x", "seven days"])
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


def test_prepare_keeps_the_fitted_transform_for_serving() -> None:
    table = load_dataset(SklearnDataset(kind="sklearn", name="wine"), "classification", Path("."))
    split = prepare(table, "classification", PreprocessSpec(seed=3))
    assert [name for name, _ in split.transform.steps] == ["impute", "scale"]
    # Round trip through skops: the loaded transform maps raw rows as in training.
    transform = load_model(dump_model(split.transform), ["sklearn."])
    raw = transform.named_steps["scale"].inverse_transform(split.X_test)
    assert np.allclose(transform.transform(raw), split.X_test)
    none = prepare(table, "classification", PreprocessSpec(impute="none", scale="none"))
    assert none.transform is None
