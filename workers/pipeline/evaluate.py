"""Metrics on the held-out split, and cross-validated metrics on the training rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

from workers.contracts import CvSpec
from workers.pipeline.errors import PipelineError

_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "f1_macro": lambda t, p: skm.f1_score(t, p, average="macro"),
    "precision_macro": lambda t, p: skm.precision_score(t, p, average="macro", zero_division=0),
    "recall_macro": lambda t, p: skm.recall_score(t, p, average="macro", zero_division=0),
    "r2": skm.r2_score,
    "mae": skm.mean_absolute_error,
    "rmse": lambda t, p: float(np.sqrt(skm.mean_squared_error(t, p))),
    "mape": skm.mean_absolute_percentage_error,
}


def compute_metrics(model: Any, X_test: Any, y_test: np.ndarray,
                    names: Sequence[str]) -> dict[str, float]:
    predictions = model.predict(X_test)
    return {name: float(_METRICS[name](y_test, predictions)) for name in names}


def cross_validate(model: Any, X: Any, y: np.ndarray, cv: CvSpec, seed: int,
                   names: Sequence[str]) -> dict[str, float]:
    """cv_<metric>_mean and cv_<metric>_std over the folds of the training rows.

    Each fold fits a fresh clone of the unfitted model (features included), so a
    fold's encoders and scalers never see its validation rows. time_series folds
    train on earlier rows (in the order given) and validate on the next ones.
    """
    splitter = (TimeSeriesSplit(n_splits=cv.folds) if cv.kind == "time_series" else
                StratifiedKFold(cv.folds, shuffle=True, random_state=seed) if cv.kind == "stratified"
                else KFold(cv.folds, shuffle=True, random_state=seed))
    scores: dict[str, list[float]] = {name: [] for name in names}
    try:
        folds = list(splitter.split(X, y))
    except ValueError as exc:
        raise PipelineError("cv.folds", str(exc)) from exc
    for train_rows, valid_rows in folds:
        fitted = clone(model).fit(_rows(X, train_rows), y[train_rows])
        for name, value in compute_metrics(fitted, _rows(X, valid_rows), y[valid_rows], names).items():
            scores[name].append(value)
    out = {}
    for name, values in scores.items():
        out[f"cv_{name}_mean"] = float(np.mean(values))
        out[f"cv_{name}_std"] = float(np.std(values))
    return out


def _rows(X: Any, rows: np.ndarray) -> Any:
    return X.iloc[rows] if hasattr(X, "iloc") else X[rows]
