"""Fit an estimator; persist it with skops (no pickle on load)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import sklearn
import skops
import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from workers.pipeline.errors import PipelineError

try:
    from skops.io._persist import get_state as _get_state
except ImportError:  # another skops: its own dumps is used
    _get_state = None

# Types that a model file may contain beyond skops' defaults; anything else is refused.
_SAFE_TYPE_PREFIXES = ("numpy.", "builtins.", "collections.", "scipy.")
# Our own transformers that a model's feature Pipeline holds (exact names, not a prefix).
_OWN_TYPES = ("workers.pipeline.features.DateParts", "workers.pipeline.features.RawRows")


def fit(estimator: Any, X: Any, y: np.ndarray) -> Any:
    """Fit without scikit-learn checking each step's params again: they were checked when the
    model was built (`build_estimator` on every delivery; the feature steps are ours), and
    the check (`get_params` through `inspect.signature`) costs a small model ~0.1 ms a step."""
    with sklearn.config_context(skip_parameter_validation=True):
        return estimator.fit(X, y)


class FittedFeatures:
    """A model Pipeline's feature steps (all but its estimator) fitted on a split's training
    rows, and those rows through them. The models of one split whose feature steps have the
    same params (ten estimators of one store) share one: each fits only its estimator, and
    the held-out rows are transformed once (for a small model the feature steps cost as much
    as a Ridge's fit). A Pipeline fitted this way dumps byte for byte as one fitted whole."""

    def __init__(self, pipeline: Any, X_train: Any) -> None:
        self.pipeline = pipeline  # a Pipeline of the fitted feature steps
        self.X_train = X_train
        self._test: tuple[Any, Any] | None = None  # (held-out rows, transformed)

    @property
    def size(self) -> int:
        """Cells held: the transformed training rows, and as many again for the held-out rows'
        transform kept beside them (fewer, for a test size under a half)."""
        return 2 * int(np.asarray(self.X_train).size)

    def transform(self, X: Any) -> Any:
        """X through the feature steps, kept for the next model that evaluates on the same rows."""
        if self._test is None or self._test[0] is not X:
            self._test = (X, self.pipeline.transform(X))
        return self._test[1]


def features_key(pipeline: Any, data_digest: str) -> str:
    """What a Pipeline's fitted feature steps depend on: the split and those steps' params."""
    described = json.dumps([data_digest, _described(pipeline[:-1])], sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()


def _described(value: Any) -> Any:
    # An estimator by its class and params, recursively; anything else by its repr (a function's
    # holds its address: never equal to another's, so such steps are never shared).
    if hasattr(value, "get_params") and not isinstance(value, type):
        cls = type(value)
        return [f"{cls.__module__}.{cls.__qualname__}",
                {k: _described(v) for k, v in value.get_params(deep=False).items()}]
    if isinstance(value, np.ndarray):  # whole: numpy's repr elides the middle of a long one
        return [str(value.dtype), value.tolist()]
    if isinstance(value, list | tuple):
        return [_described(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _described(v) for k, v in value.items()}
    return repr(value)


def fit_features(pipeline: Any, X: Any, y: np.ndarray) -> FittedFeatures:
    """Fit `pipeline`'s feature steps (its own objects, as its `fit` would) on the training rows."""
    features = pipeline[:-1]  # a Pipeline of the same step objects
    with sklearn.config_context(skip_parameter_validation=True):
        return FittedFeatures(features, features.fit_transform(X, y))


def fit_on_features(pipeline: Any, features: FittedFeatures, y: np.ndarray) -> Any:
    """`pipeline` fitted on the rows `features` was fitted on: its estimator fitted on the
    transformed rows, its feature steps replaced by the fitted ones (same params: see
    `features_key`). The same fitted Pipeline as `fit(pipeline, X, y)`."""
    with sklearn.config_context(skip_parameter_validation=True):
        pipeline.steps[-1][1].fit(features.X_train, y)
    pipeline.steps[:-1] = features.pipeline.steps
    return pipeline


def predict(fitted: Any, X: Any, features: FittedFeatures | None = None) -> Any:
    """fitted.predict(X); through `features`' kept transform of X where `fitted` holds those
    very feature steps (fit_on_features)."""
    steps = getattr(fitted, "steps", None)
    if (features is None or steps is None or len(steps) != len(features.pipeline.steps) + 1
            or any(a[1] is not b[1] for a, b in zip(steps, features.pipeline.steps, strict=False))):
        return fitted.predict(X)
    return steps[-1][1].predict(features.transform(X))


def dump_model(model: Any) -> bytes:
    return dump_model_and_types(model)[0]


def dump_model_and_types(model: Any) -> tuple[bytes, list[str] | None]:
    """The model in skops' format, byte for byte the same for the same fitted model, and
    every type its file names (None with another skops): a superset of what skops' audit
    would report, read off the state as it is written instead of parsing the file again.

    skops numbers objects by `id()` (a memory address) and zip's `writestr` stamps each
    entry with the current time: two identical fits gave two files, two digests and
    two registry versions. Here objects are numbered in the order they are met and
    every entry carries zip's epoch. The schema is written compact (`_schema_json`): skops
    indents it, and `json.dumps` with an indent runs Python's pure-Python encoder (for a
    10-tree forest two thirds of the dump). Where skops' internals differ (another
    version), its own `dumps` is used.
    """
    if _StableIds is None or _get_state is None:
        return bytes(sio.dumps(model)), None
    buffer = io.BytesIO()
    with _EpochZip(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = _StableIds(zip_file=archive)
        state = _get_state(model, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        schema = _schema_json(state)
        archive.writestr("schema.json", schema)
    return buffer.getvalue(), sorted(_types_in(schema, state))


def _schema_json(state: dict[str, Any]) -> bytes:
    """The state as JSON, by orjson: a 10-tree forest's 80 kB schema in 0.06 ms instead of
    json's 0.54. orjson writes a float NaN or infinity as null where json writes NaN, and
    refuses what json would write otherwise (an int over 64 bits, a key that is not a
    string, a numpy scalar): such a state goes through json, as before."""
    try:
        text = orjson.dumps(state)
    except TypeError:  # orjson.JSONEncodeError
        return _json_text(state)
    # skops writes a None as the string "null"; any other null was a value (a NaN?) in the state.
    if text.count(b"null") != text.count(b'"null"'):
        return _json_text(state)
    return text


def _json_text(state: dict[str, Any]) -> bytes:
    return json.dumps(state, check_circular=False).encode()  # skops numbers shared objects: no cycles


# Every skops node starts with its class and module, in that order: read off the JSON text
# in one pass (a third of the walk's time); any other shape falls back to the walk. The
# first pattern is orjson's text, the second json's.
_NODE_TYPES = (re.compile(rb'"__class__":"([^"\\]*)","__module__":"([^"\\]*)"'),
               re.compile(rb'"__class__": "([^"\\]*)", "__module__": "([^"\\]*)"'))


def _types_in(schema: bytes, state: Any) -> set[str]:
    nodes = schema.count(b'"__class__":')
    for pattern in _NODE_TYPES:
        pairs = pattern.findall(schema)
        if len(pairs) == nodes:
            return {f"{module.decode()}.{name.decode()}" for name, module in set(pairs)}
    return _types_named(state)


def _types_named(node: Any, found: set[str] | None = None) -> set[str]:
    found = set() if found is None else found
    if isinstance(node, dict):
        if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
            found.add(f"{node['__module__']}.{node['__class__']}")
        for value in node.values():
            _types_named(value, found)
    elif isinstance(node, list | tuple):  # skops' state has tuples where the JSON has lists
        for value in node:
            _types_named(value, found)
    return found


def _stable_ids() -> Any:
    """skops' save context, numbering objects in the order met (None: another skops)."""
    try:
        from skops.io._persist import SaveContext
    except ImportError:
        return None

    class StableIds(SaveContext):  # type: ignore[misc]
        def memoize(self, obj: Any) -> int:
            # The object stays in the memo, so its id() is not reused while saving.
            if id(obj) not in self.memo:
                self.memo[id(obj)] = (obj, len(self.memo) + 1)  # 0 would read as "no id"
            return int(self.memo[id(obj)][1])

    return StableIds


_StableIds = _stable_ids()


class _EpochZip(zipfile.ZipFile):
    """A zip archive whose entries carry zip's epoch instead of the time they were written."""

    def writestr(self, zinfo_or_arcname: str | zipfile.ZipInfo, data: Any,
                 compress_type: int | None = None, compresslevel: int | None = None) -> None:
        if isinstance(zinfo_or_arcname, str):
            zinfo_or_arcname = zipfile.ZipInfo(zinfo_or_arcname)  # date_time: 1980-01-01
            zinfo_or_arcname.compress_type = self.compression
            zinfo_or_arcname.external_attr = 0o600 << 16  # what writestr gives a name
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)


def audited_types(data: bytes, allowed_prefixes: Sequence[str]) -> list[str]:
    """The types a model file needs trusted beyond skops' defaults, all of them within the
    allow-list (PipelineError otherwise): skops' full audit, the slow part of a load."""
    untrusted = sio.get_untrusted_types(data=data)
    _check_allowed(untrusted, allowed_prefixes)
    return list(untrusted)


def _check_allowed(types: Sequence[str], allowed_prefixes: Sequence[str]) -> None:
    prefixes = tuple(allowed_prefixes) + _SAFE_TYPE_PREFIXES
    refused = [t for t in types if not t.startswith(prefixes) and t not in _OWN_TYPES]
    if refused:
        raise PipelineError("model", f"model file holds types outside the allow-list: {refused}")


def load_model(data: bytes, allowed_prefixes: Sequence[str], trusted: Sequence[str] | None = None) -> Any:
    """Load a model file, trusting only types from the allow-list and plain data types.

    `trusted`: the types recorded when this file (these very bytes: the caller checked
    their digest) was audited at deploy. They are checked against today's allow-list
    and skops still refuses any type in the file outside them; only skops' separate
    audit pass (`get_untrusted_types`, as long as the load itself) is saved. A list
    that does not cover the file falls back to the full audit.
    """
    if trusted is not None:
        _check_allowed(trusted, allowed_prefixes)
        try:
            return sio.loads(data, trusted=list(trusted))
        except UntrustedTypesFoundException:
            pass  # a stale or wrong record: audit the file itself
    return sio.loads(data, trusted=audited_types(data, allowed_prefixes))


def load_served(read: Callable[[str], bytes], model_digest: str, transform_digest: str | None,
                allowed_prefixes: Sequence[str],
                trusted: Mapping[str, Sequence[str]] | None = None) -> Any:
    """A deployed version's estimator from its artifacts (`read`: the store's verified get),
    with its separately fitted impute/scale steps in front where it has them. `trusted`:
    the audited types recorded at deploy, by artifact digest (workers/pipeline/train.py
    `load_model`); a digest without them is audited here."""
    from sklearn.pipeline import Pipeline

    types = trusted or {}
    estimator = load_model(read(model_digest), allowed_prefixes, types.get(model_digest))
    if transform_digest is None:
        return estimator
    return Pipeline([("preprocess", load_model(read(transform_digest), allowed_prefixes,
                                               types.get(transform_digest))),
                     ("model", estimator)])


def recorded_types(read: Callable[[str], bytes], digests: Sequence[str | None],
                   allowed_prefixes: Sequence[str],
                   named: Mapping[str, Sequence[str] | None] | None = None) -> dict[str, list[str]]:
    """At deploy: each model file's audited types by digest, to record with the version. A file
    with types outside the allow-list gets no entry: every load audits (and refuses) it.
    `named`: the types this process saw named as it wrote a file (dump_model_and_types), used
    instead of the audit where all are allowed (a small model's audit was 7% of its work);
    skops still refuses at load any type of the file outside the list."""
    types: dict[str, list[str]] = {}
    for digest in digests:
        if digest is None:
            continue
        seen = (named or {}).get(digest)
        with contextlib.suppress(PipelineError):
            if seen is not None:
                _check_allowed(seen, allowed_prefixes)
                types[digest] = list(seen)
                continue
        with contextlib.suppress(PipelineError):
            types[digest] = audited_types(read(digest), allowed_prefixes)
    return types
