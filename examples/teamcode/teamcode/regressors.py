"""Regressors of the team."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data


class ShrunkLinearRegressor(RegressorMixin, BaseEstimator):
    """Least squares with its coefficients shrunk towards zero (ridge, in closed form)."""

    def __init__(self, shrink: float = 1.0) -> None:
        self.shrink = shrink

    def fit(self, X: Any, y: Any) -> ShrunkLinearRegressor:
        if self.shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {self.shrink}")
        X, y = validate_data(self, X, y, y_numeric=True)
        x_mean, y_mean = X.mean(axis=0), y.mean()
        Xc = X - x_mean
        gram = Xc.T @ Xc + self.shrink * np.eye(X.shape[1])
        self.coef_ = np.linalg.solve(gram, Xc.T @ (y - y_mean))
        self.intercept_ = float(y_mean - x_mean @ self.coef_)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False)
        return np.asarray(X @ self.coef_ + self.intercept_)
