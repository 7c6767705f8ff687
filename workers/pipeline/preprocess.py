"""Split, impute and scale: fitted on the training rows only."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from workers.contracts import PreprocessSpec
from workers.pipeline.data import Table
from workers.pipeline.errors import PipelineError


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    # The fitted impute/scale steps (None if there are none): a deployed model needs
    # them to predict on raw rows. Not part of the .npz bytes.
    transform: Any = None


def prepare(table: Table, task: str, options: PreprocessSpec) -> Split:
    """Seeded split (stratified for classification), then impute and scale."""
    stratify = table.y if task == "classification" and _can_stratify(table.y, options) else None
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            table.X, table.y, test_size=options.test_size, random_state=options.seed,
            stratify=stratify,
        )
    except ValueError as exc:
        raise PipelineError("preprocess.test_size", str(exc)) from exc
    steps: list[tuple[str, Any]] = []
    if options.impute != "none":
        imputer = SimpleImputer(strategy=options.impute).fit(X_train)
        X_train, X_test = imputer.transform(X_train), imputer.transform(X_test)
        steps.append(("impute", imputer))
    if options.scale != "none":
        scaler = StandardScaler() if options.scale == "standard" else MinMaxScaler()
        scaler.fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        steps.append(("scale", scaler))
    return Split(X_train, X_test, y_train, y_test, Pipeline(steps) if steps else None)


def _can_stratify(y: np.ndarray, options: PreprocessSpec) -> bool:
    # Stratifying needs at least two rows of every class and a test set that can hold them.
    _, counts = np.unique(y, return_counts=True)
    n_test = int(np.ceil(options.test_size * len(y)))
    return bool(counts.min() >= 2 and n_test >= len(counts))


def dump_split(split: Split) -> bytes:
    """Arrays as .npz bytes: plain data, loadable without pickle."""
    buf = io.BytesIO()
    np.savez(buf, X_train=split.X_train, X_test=split.X_test, y_train=split.y_train,
             y_test=split.y_test)
    return buf.getvalue()


def load_split(data: bytes) -> Split:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return Split(z["X_train"], z["X_test"], z["y_train"], z["y_test"])


def table_digest_bytes(table: Table) -> bytes:
    """The bytes that identify a dataset's content (for the cache key and lineage)."""
    buf = io.BytesIO()
    np.savez(buf, X=table.X, y=table.y, names=np.asarray(table.feature_names))
    return buf.getvalue()
