"""Estimators for the benchmark's I/O-bound and no-op workloads.

They are ordinary scikit-learn classifiers, so they go through the same spec
validation, stages, skops persistence and allow-list as any real model; the
benchmark adds `bench.workloads.` to `allowed_estimator_prefixes`.
"""

from __future__ import annotations

import time
from numbers import Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval


class WaitingClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Predicts the majority class; fit waits `seconds` and predict `predict_seconds`.

    The wait stands for work done elsewhere (a remote GPU, data over the
    network): the worker holds the model's slot but uses no CPU, which is the
    case where many more workers than cores pay off.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "seconds": [Interval(Real, 0, None, closed="left")],
        "predict_seconds": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, seconds: float = 1.0, predict_seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.predict_seconds = predict_seconds

    def fit(self, X: np.ndarray, y: np.ndarray) -> WaitingClassifier:
        if self.seconds:
            time.sleep(self.seconds)  # the simulated remote work itself, not synchronisation
        values, counts = np.unique(y, return_counts=True)
        self.classes_ = values
        self.majority_ = values[int(np.argmax(counts))].item()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.predict_seconds:
            time.sleep(self.predict_seconds)
        return np.full(len(X), self.majority_)


class NoOpClassifier(WaitingClassifier):
    """Does no work at all: a chain of these measures the platform's own overhead."""

    def __init__(self, seconds: float = 0.0, predict_seconds: float = 0.0) -> None:
        super().__init__(seconds, predict_seconds)
