"""Pure helpers of the history commands, the store's JSON copies and the fitted transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from producer.history import parse_age, parse_tags
from workers.contracts import PreprocessSpec, SklearnDataset
from workers.pipeline.data import load_dataset
from workers.pipeline.preprocess import prepare
from workers.pipeline.train import dump_model, load_model
from workers.store import ArtifactStore
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


def test_snapshot_writes_what_read_returns_at_write_time(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    state = {"n": 1}
    store.write_snapshot("states/b/m.json", lambda: dict(state))
    state["n"] = 2
    store.write_snapshot("states/b/m.json", lambda: dict(state))
    assert store.iter_records("states") == [{"n": 2}]


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
