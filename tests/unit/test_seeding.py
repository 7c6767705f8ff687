"""The workers' cheaper int seeding gives numpy's own generator: the same state, the same
draws, the same fitted forest, the same errors."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.utils import validation

from workers.pipeline import seeding


@pytest.fixture
def installed() -> Iterator[None]:
    """`seeding.install()`, undone after the test: every module gets its original back."""
    before = {name: module.check_random_state for name, module in list(sys.modules.items())
              if name.startswith("sklearn") and hasattr(module, "check_random_state")}
    assert seeding.install()
    yield
    for name, function in before.items():
        sys.modules[name].check_random_state = function  # type: ignore[attr-defined]


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 123456789, 2**31, 2**32 - 1, np.int64(5), np.uint32(9)])
def test_the_same_state_and_draws_as_numpys_random_state(seed: int) -> None:
    ours, theirs = seeding.legacy_random_state(seed), np.random.RandomState(seed)
    a, b = ours.get_state(), theirs.get_state()
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]
    assert np.array_equal(ours.randint(0, 2**31, 100), theirs.randint(0, 2**31, 100))
    assert np.array_equal(ours.standard_normal(7), theirs.standard_normal(7))


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_out_of_range_is_refused_as_numpy_refuses_it(seed: int) -> None:
    with pytest.raises(ValueError, match="Seed must be between 0 and 2\\*\\*32 - 1"):
        np.random.RandomState(seed)
    with pytest.raises(ValueError, match="Seed must be between 0 and 2\\*\\*32 - 1"):
        seeding.legacy_random_state(seed)


def test_installed_forests_fit_the_same_model_through_the_cheap_seeding(installed: None) -> None:
    from sklearn.ensemble import _forest
    from sklearn.tree import _classes

    # Modules that imported it before, and the one they import it from, now use it.
    assert _forest.check_random_state is validation.check_random_state is not \
        validation.check_random_state.__wrapped__  # type: ignore[attr-defined]
    assert _classes.check_random_state is validation.check_random_state
    X, y = make_regression(n_samples=120, n_features=6, random_state=0)
    ours = pickle.dumps(RandomForestRegressor(n_estimators=10, max_depth=4, random_state=3).fit(X, y))
    # The rest passes through: None is numpy's global generator, an instance is itself.
    assert validation.check_random_state(None) is np.random.mtrand._rand
    given = np.random.RandomState(1)
    assert validation.check_random_state(given) is given
    with pytest.raises(ValueError, match="cannot be used to seed"):
        validation.check_random_state("seed")
    # Installing again changes nothing.
    patched = validation.check_random_state
    assert seeding.install() and validation.check_random_state is patched

    original = validation.check_random_state.__wrapped__  # type: ignore[attr-defined]
    _forest.check_random_state = _classes.check_random_state = original  # type: ignore[attr-defined]
    theirs = pickle.dumps(RandomForestRegressor(n_estimators=10, max_depth=4, random_state=3).fit(X, y))
    assert ours == theirs
