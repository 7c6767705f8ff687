"""Fit an estimator; persist it with skops (no pickle on load)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import skops
import skops.io as sio

from workers.pipeline.errors import PipelineError

# Types that a model file may contain beyond skops' defaults; anything else is refused.
_SAFE_TYPE_PREFIXES = ("numpy.", "builtins.", "collections.", "scipy.")
# Our own transformers that a model's feature Pipeline holds (exact names, not a prefix).
_OWN_TYPES = ("workers.pipeline.features.DateParts", "workers.pipeline.features.RawRows")


def fit(estimator: Any, X: Any, y: np.ndarray) -> Any:
    return estimator.fit(X, y)


def dump_model(model: Any) -> bytes:
    """The model in skops' format, its schema written compact.

    skops indents the schema, and `json.dumps` with an indent runs Python's pure-Python
    encoder: for a 10-tree forest that was two thirds of the dump and a third of a small
    model's whole chain. Same steps as `skops.io.dumps` otherwise; where skops' internals
    differ (another version), its own `dumps` is used.
    """
    try:
        from skops.io._persist import SaveContext, get_state
    except ImportError:
        return bytes(sio.dumps(model))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = SaveContext(zip_file=archive)
        state = get_state(model, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        archive.writestr("schema.json", json.dumps(state))
    return buffer.getvalue()


def load_model(data: bytes, allowed_prefixes: Sequence[str]) -> Any:
    """Load a model file, trusting only types from the allow-list and plain data types."""
    prefixes = tuple(allowed_prefixes) + _SAFE_TYPE_PREFIXES
    untrusted = sio.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not t.startswith(prefixes) and t not in _OWN_TYPES]
    if refused:
        raise PipelineError("model", f"model file holds types outside the allow-list: {refused}")
    return sio.loads(data, trusted=untrusted)


def load_served(read: Callable[[str], bytes], model_digest: str, transform_digest: str | None,
                allowed_prefixes: Sequence[str]) -> Any:
    """A deployed version's estimator from its artifacts (`read`: the store's verified get),
    with its separately fitted impute/scale steps in front where it has them."""
    from sklearn.pipeline import Pipeline

    estimator = load_model(read(model_digest), allowed_prefixes)
    if transform_digest is None:
        return estimator
    return Pipeline([("preprocess", load_model(read(transform_digest), allowed_prefixes)),
                     ("model", estimator)])
