"""Metrics on the held-out split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

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


def compute_metrics(model: Any, X_test: np.ndarray, y_test: np.ndarray,
                    names: Sequence[str]) -> dict[str, float]:
    predictions = model.predict(X_test)
    return {name: float(_METRICS[name](y_test, predictions)) for name in names}
