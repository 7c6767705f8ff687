"""Fit an estimator; persist it with skops (no pickle on load)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import skops.io as sio

from workers.pipeline.errors import PipelineError

# Types that a model file may contain beyond skops' defaults; anything else is refused.
_SAFE_TYPE_PREFIXES = ("numpy.", "builtins.", "collections.", "scipy.")


def fit(estimator: Any, X: np.ndarray, y: np.ndarray) -> Any:
    return estimator.fit(X, y)


def dump_model(model: Any) -> bytes:
    return sio.dumps(model)


def load_model(data: bytes, allowed_prefixes: Sequence[str]) -> Any:
    """Load a model file, trusting only types from the allow-list and plain data types."""
    prefixes = tuple(allowed_prefixes) + _SAFE_TYPE_PREFIXES
    untrusted = sio.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not t.startswith(prefixes)]
    if refused:
        raise PipelineError("model", f"model file holds types outside the allow-list: {refused}")
    return sio.loads(data, trusted=untrusted)
