"""Cheaper `RandomState(int)` for scikit-learn's `check_random_state` in the workers.

numpy 2's `RandomState(seed)` first seeds a Mersenne Twister from a fresh `SeedSequence`,
whose `generate_state` of 624 words costs ~140 us here, and then overwrites all of it with
the legacy seeding of `seed`. scikit-learn makes one per tree and per bootstrap sample (21 for a
10-tree forest), ~25% of a small forest's fit. `legacy_random_state` builds the same
generator without the discarded entropy: the same state, the same draws, the same model
files. `install` points scikit-learn's `check_random_state` at it, and only after checking
on a few seeds that this numpy gives the same state both ways.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import numpy as np
from numpy.random.bit_generator import ISeedSequence


class _Discarded(ISeedSequence):
    """The state `_legacy_seeding` overwrites at once: zeros, not 624 generated words."""

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> np.ndarray:
        return np.zeros(n_words, dtype=dtype)


_DISCARDED = _Discarded()


def legacy_random_state(seed: int) -> np.random.RandomState:
    """`np.random.RandomState(seed)` for an int seed, without generating a state to discard first."""
    bits = np.random.MT19937(_DISCARDED)  # type: ignore[arg-type]  # any ISeedSequence, at run time
    bits._legacy_seeding(seed)  # what RandomState(seed) calls; raises on a seed out of range
    return np.random.RandomState(bits)


def _same_as_numpy(seeds: tuple[int, ...] = (0, 1, 42, 2**32 - 1)) -> bool:
    for seed in seeds:
        ours = legacy_random_state(seed).get_state(legacy=False)
        theirs = np.random.RandomState(seed).get_state(legacy=False)
        if not (np.array_equal(ours["state"]["key"], theirs["state"]["key"])
                and ours["state"]["pos"] == theirs["state"]["pos"]
                and (ours["has_gauss"], ours["gauss"]) == (theirs["has_gauss"], theirs["gauss"])):
            return False
    return True


def install() -> bool:
    """Make scikit-learn's `check_random_state` (in every module that imported it, and for
    modules imported later) use `legacy_random_state` for int seeds. False, and nothing
    changed, where this numpy does not give the same generator both ways."""
    from sklearn.utils import validation

    original = getattr(validation.check_random_state, "__wrapped__", validation.check_random_state)
    try:
        if not _same_as_numpy():
            return False
    except (AttributeError, TypeError, ValueError):  # a numpy without the private seeding
        return False

    def check_random_state(seed: Any) -> Any:
        if isinstance(seed, numbers.Integral):
            return legacy_random_state(int(seed))
        return original(seed)

    check_random_state.__wrapped__ = original  # type: ignore[attr-defined]
    check_random_state.__doc__ = original.__doc__
    for name, module in list(sys.modules.items()):
        if name.startswith("sklearn") and getattr(module, "check_random_state", None) is original:
            module.check_random_state = check_random_state  # type: ignore[attr-defined]
    return True
