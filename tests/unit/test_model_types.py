"""Loading a model file with the types audited at deploy, and the bounded model cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from workers.modelcache import ModelCache
from workers.pipeline.errors import PipelineError
from workers.pipeline.train import (
    audited_types,
    dump_model,
    dump_model_and_types,
    load_model,
    load_served,
    recorded_types,
)
from workers.store import digest_bytes

ALLOWED = ["sklearn."]
X = np.random.default_rng(0).normal(size=(40, 3))


@pytest.fixture(scope="module")
def model_file() -> bytes:
    fitted = Pipeline([("scale", StandardScaler()),
                       ("gb", GradientBoostingRegressor(n_estimators=5, random_state=0))])
    return dump_model(fitted.fit(X, X.sum(axis=1)))


@pytest.fixture
def audits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times skops' audit pass runs (a counting wrapper around the real one)."""
    calls: list[int] = []
    real = sio.get_untrusted_types

    def counted(**kwargs: Any) -> list[str]:
        calls.append(1)
        return real(**kwargs)

    monkeypatch.setattr(sio, "get_untrusted_types", counted)
    return calls


def test_a_recorded_list_loads_without_a_second_audit(model_file: bytes, audits: list[int]) -> None:
    types = audited_types(model_file, ALLOWED)
    assert "sklearn.tree._tree.Tree" in types and len(audits) == 1
    audited = load_model(model_file, ALLOWED)
    assert len(audits) == 2  # no list: the full audit, as before
    recorded = load_model(model_file, ALLOWED, trusted=types)
    assert len(audits) == 2  # the recorded list: skops loads with it, no audit pass
    np.testing.assert_array_equal(recorded.predict(X), audited.predict(X))


def test_a_recorded_type_outside_the_allow_list_is_refused(model_file: bytes, audits: list[int]) -> None:
    types = audited_types(model_file, ALLOWED)
    # Recorded under a wider allow-list than today's: refused before skops reads anything.
    with pytest.raises(PipelineError, match="outside the allow-list.*sklearn.tree._tree.Tree"):
        load_model(model_file, ["nothing."], trusted=types)
    assert len(audits) == 1


def test_a_list_that_does_not_cover_the_file_falls_back_to_the_audit(model_file: bytes,
                                                                      audits: list[int]) -> None:
    # A stale or forged record (nothing to trust): skops refuses the Tree, the file is audited ...
    loaded = load_model(model_file, ALLOWED, trusted=[])
    assert len(audits) == 1 and loaded.predict(X).shape == (40,)
    # ... and the audit still holds the allow-list.
    with pytest.raises(PipelineError, match="outside the allow-list"):
        load_model(model_file, ["nothing."], trusted=[])


def test_recorded_types_are_by_digest_and_skip_refused_files(model_file: bytes) -> None:
    files = {digest_bytes(model_file): model_file}
    digest = next(iter(files))
    assert recorded_types(files.__getitem__, [digest, None], ALLOWED) == \
        {digest: sio.get_untrusted_types(data=model_file)}
    # A file with types outside the allow-list gets no entry: every load audits and refuses it.
    assert recorded_types(files.__getitem__, [digest], ["nothing."]) == {}


def test_the_types_named_as_a_file_is_written_cover_the_audit_and_load_it(audits: list[int]) -> None:
    fitted = Pipeline([("scale", StandardScaler()),
                       ("gb", GradientBoostingRegressor(n_estimators=3, random_state=0))]).fit(X, X[:, 0])
    data, named = dump_model_and_types(fitted)
    assert data == dump_model(fitted) and named is not None
    assert set(sio.get_untrusted_types(data=data)) <= set(named)
    audits.clear()
    files = {digest_bytes(data): data}
    digest = next(iter(files))
    # At deploy, the named list stands in for the audit ...
    assert recorded_types(files.__getitem__, [digest], ALLOWED, {digest: named}) == {digest: named}
    assert audits == []
    np.testing.assert_array_equal(load_model(data, ALLOWED, trusted=named).predict(X), fitted.predict(X))
    assert audits == []
    # ... unless a named type is outside the allow-list: then the file is audited (and refused).
    assert recorded_types(files.__getitem__, [digest], ["sklearn.pipeline."], {digest: named}) == {}
    assert len(audits) == 1


def test_load_served_reads_each_digest_and_uses_its_own_list(model_file: bytes, audits: list[int]) -> None:
    digest = digest_bytes(model_file)
    read: list[str] = []

    def get(d: str) -> bytes:
        read.append(d)
        return model_file

    load_served(get, digest, None, ALLOWED, {digest: audited_types(model_file, ALLOWED)})
    assert read == [digest] and len(audits) == 1
    load_served(get, digest, None, ALLOWED, {"another digest": ["sklearn.tree._tree.Tree"]})
    assert len(audits) == 2  # a list recorded for other bytes is not this file's


def test_the_model_cache_keeps_the_most_recently_used() -> None:
    cache, loads = ModelCache(2), []

    def load(name: str) -> Any:
        return lambda: loads.append(name) or name

    assert cache.get("a", load("a")) == "a" and cache.get("b", load("b")) == "b"
    assert cache.get("a", load("a")) == "a" and loads == ["a", "b"]  # a hit: not loaded again
    cache.get("c", load("c"))  # evicts b, the least recently used
    assert len(cache) == 2
    cache.get("a", load("a"))
    cache.get("b", load("b"))
    assert loads == ["a", "b", "c", "b"]
    cache.resize(1)
    assert len(cache) == 1 and cache.get("b", load("b")) == "b" and len(loads) == 4
    off = ModelCache(0)
    off.get("a", load("a"))
    off.get("a", load("a"))
    assert len(off) == 0 and loads[-2:] == ["a", "a"]


@pytest.mark.parametrize("fitted", [
    Pipeline([("scale", StandardScaler()),
              ("gb", GradientBoostingRegressor(n_estimators=3, random_state=0))]).fit(X, X[:, 0]),
    RandomForestRegressor(n_estimators=3, max_depth=2, random_state=0).fit(X, X[:, 0]),
])
def test_the_types_read_off_the_schema_text_are_the_walks(fitted: Any) -> None:
    import json
    import zipfile
    from io import BytesIO

    from workers.pipeline.train import _types_in, _types_named

    data, named = dump_model_and_types(fitted)
    schema = zipfile.ZipFile(BytesIO(data)).read("schema.json")
    walked = _types_named(json.loads(schema))
    assert named == sorted(walked) and "sklearn.tree._tree.Tree" in walked
    # A dict key "__class__" (a value a team's estimator may hold) leaves the text unpaired.
    odd = {"__class__": "dict", "__module__": "builtins", "content": {"__class__": {"x": 1}}}
    assert _types_in(json.dumps(odd).encode(), odd) == {"builtins.dict"}


def test_the_schema_text_is_orjsons_where_it_reads_back_the_same_and_jsons_otherwise() -> None:
    import json
    import math

    from workers.pipeline.train import _schema_json

    state = {"__class__": "Thing", "__module__": "mod", "content": {"a": [1, True, "null"]}, "__id__": 3}
    assert json.loads(_schema_json(state)) == state and b" " not in _schema_json(state)  # orjson's, compact
    # orjson would write NaN as null and refuses ints over 64 bits: json writes those.
    nan = json.loads(_schema_json({"x": float("nan"), "y": None}))
    assert math.isnan(nan["x"]) and nan["y"] is None
    assert _schema_json({"x": 2**70}) == json.dumps({"x": 2**70}).encode()
