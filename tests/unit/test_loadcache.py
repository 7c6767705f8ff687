"""The machine's signed cache of loaded models (workers/loadcache.py): a real skops-loaded model
written and read back by a second cache object (as a second process would), and what it refuses."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from workers import loadcache
from workers.loadcache import LoadCache, load_cache
from workers.pipeline.train import dump_model, load_model
from workers.settings import Settings

X = np.random.default_rng(0).normal(size=(40, 3))
KEY = ("digest-of-model", None, ("sklearn.",))


@pytest.fixture(scope="module")
def model_file() -> bytes:
    return dump_model(GradientBoostingRegressor(n_estimators=5, random_state=0).fit(X, X.sum(axis=1)))


class CountedLoad:
    """The real skops load, counted."""

    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def __call__(self) -> Any:
        self.calls += 1
        return load_model(self.data, ["sklearn."])


def entries(root: Path) -> list[Path]:
    return sorted(root.glob("*.pkl"))


def test_a_second_process_reads_the_loaded_model_without_loading_it(tmp_path: Path,
                                                                    model_file: bytes) -> None:
    load = CountedLoad(model_file)
    first = LoadCache(tmp_path / "loaded", 1 << 20).get(KEY, load)
    again = LoadCache(tmp_path / "loaded", 1 << 20).get(KEY, load)
    assert load.calls == 1
    np.testing.assert_array_equal(again.predict(X), first.predict(X))
    assert (tmp_path / "loaded").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "loaded" / ".key").stat().st_mode & 0o777 == 0o600
    assert len(entries(tmp_path / "loaded")) == 1
    # Another key (another digest, allow-list or library version) is its own entry.
    LoadCache(tmp_path / "loaded", 1 << 20).get(("other", None, ("sklearn.",)), load)
    assert load.calls == 2 and len(entries(tmp_path / "loaded")) == 2


def test_an_entry_that_does_not_verify_is_deleted_and_never_unpickled(tmp_path: Path,
                                                                     model_file: bytes) -> None:
    root = tmp_path / "loaded"
    load = CountedLoad(model_file)
    LoadCache(root, 1 << 20).get(KEY, load)
    [entry] = entries(root)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> Any:
            return (os.mkdir, (str(marker),))

    # Someone without the key swaps in a pickle that would run code: the old tag does not cover it.
    entry.write_bytes(entry.read_bytes()[:32] + pickle.dumps(Payload()))
    model = LoadCache(root, 1 << 20).get(KEY, load)
    assert not marker.exists()
    assert load.calls == 2  # loaded from the model file again, and the entry written afresh
    assert model.predict(X).shape == (40,)
    assert LoadCache(root, 1 << 20).get(KEY, load) is not None and load.calls == 2


@pytest.mark.parametrize("widen", ["dir", "key"])
def test_a_key_or_directory_others_can_read_turns_the_cache_off(tmp_path: Path, model_file: bytes,
                                                               widen: str) -> None:
    root = tmp_path / "loaded"
    load = CountedLoad(model_file)
    LoadCache(root, 1 << 20).get(KEY, load)
    (root if widen == "dir" else root / ".key").chmod(0o755 if widen == "dir" else 0o644)
    LoadCache(root, 1 << 20).get(KEY, load)
    LoadCache(root, 1 << 20).get(KEY, load)
    assert load.calls == 3  # nothing read from a cache whose key others could have used


def test_the_least_recently_used_entries_go_past_the_size(tmp_path: Path, model_file: bytes) -> None:
    root = tmp_path / "loaded"
    load = CountedLoad(model_file)
    size = len(pickle.dumps(load(), protocol=pickle.HIGHEST_PROTOCOL)) + 32
    cache = LoadCache(root, 2 * size + size // 2)  # room for two
    for name in ("a", "b"):
        cache.get((name,), load)
    os.utime(cache.entry(("a",)), (1, 1))
    os.utime(cache.entry(("b",)), (2, 2))
    cache.get(("a",), load)  # a read: `a` is the most recently used now
    cache.get(("c",), load)
    assert load.calls == 1 + 3
    assert [cache.entry((name,)).exists() for name in "abc"] == [True, False, True]


def test_the_settings_turn_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFLEET_MODEL_LOAD_CACHE", "")
    assert Settings().model_load_cache is None
    assert load_cache(None, 2048) is None
    assert load_cache(tmp_path, 0) is None
    assert load_cache(tmp_path, 10) is load_cache(tmp_path, 10)
    assert loadcache._versions().count("|") == 5


def test_a_big_model_kept_as_it_is_trained_is_served_without_skops(tmp_path: Path, model_file: bytes,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import skops.io as sio

    from workers.modelcache import KEEP_TRAINED_BYTES, MODELS, cached_served, keep_trained

    settings = Settings(model_load_cache=tmp_path / "loaded", model_cache_size=0)
    fitted = load_model(model_file, ["sklearn."])
    digest = "a" * 64
    keep_trained(settings, digest, fitted, KEEP_TRAINED_BYTES - 1)
    assert not entries(tmp_path / "loaded")  # a small model's file: not worth a pickle
    keep_trained(settings, digest, fitted, KEEP_TRAINED_BYTES)
    assert len(entries(tmp_path / "loaded")) == 1
    reads: list[str] = []

    def read(name: str) -> bytes:
        reads.append(name)  # the store's verified read: still done on a hit
        return model_file

    def no_skops(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("skops load on a load-cache hit")

    monkeypatch.setattr(sio, "loads", no_skops)
    served = cached_served(read, digest, None, settings)
    assert reads == [digest] and len(MODELS) == 0
    np.testing.assert_array_equal(served.predict(X), fitted.predict(X))


def test_a_process_measures_the_directory_again_only_after_writing_a_sixteenth(
        tmp_path: Path, model_file: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[int] = []
    real = LoadCache._prune
    monkeypatch.setattr(LoadCache, "_prune", lambda self: (scans.append(1), real(self)))
    fitted = load_model(model_file, ["sklearn."])
    size = len(pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL))
    cache = LoadCache(tmp_path / "loaded", 16 * 4 * size)  # a sixteenth: four entries
    for i in range(11):
        cache.put((i,), fitted)
    cache.put((0,), fitted)  # there already: not written again
    assert len(entries(tmp_path / "loaded")) == 11
    assert len(scans) == 3  # the first write, then each time more than four more were written
