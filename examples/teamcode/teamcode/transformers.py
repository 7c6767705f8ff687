"""Transformers of the team: plain scikit-learn estimators, so Pipeline and skops take them."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted


class QuantileClipper(TransformerMixin, BaseEstimator):
    """Clips each column to the [lower, upper] quantiles seen in fit: tames outliers."""

    def __init__(self, lower: float = 0.01, upper: float = 0.99) -> None:
        self.lower = lower
        self.upper = upper

    def fit(self, X: Any, y: Any = None) -> QuantileClipper:
        if not 0.0 <= self.lower < self.upper <= 1.0:
            raise ValueError(f"need 0 <= lower < upper <= 1, got {self.lower} and {self.upper}")
        X = check_array(X, ensure_all_finite="allow-nan")
        self.low_, self.high_ = np.nanquantile(X, [self.lower, self.upper], axis=0)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "low_")
        return np.clip(check_array(X, ensure_all_finite="allow-nan"), self.low_, self.high_)
