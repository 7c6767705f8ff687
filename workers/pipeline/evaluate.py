"""Metrics on the held-out split, cross-validated metrics on the training rows, and the
small plot data a model report draws from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sklearn
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
# Enough points for a residual plot, few enough to keep every report a few kB.
RESIDUAL_SAMPLE = 300
TOP_FEATURES = 20


def compute_metrics(model: Any, X_test: Any, y_test: np.ndarray,
                    names: Sequence[str]) -> dict[str, float]:
    return score(y_test, model.predict(X_test), names)


def score(y_test: np.ndarray, predictions: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    # The arguments are ours (two arrays, fixed options): the metrics' own argument-type
    # checks cost more than a small model's metric. Their checks of the values stay.
    with sklearn.config_context(skip_parameter_validation=True):
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


def plot_data(model: Any, task: str, y_test: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    """What a report's plots need, as plain JSON data (the PNGs are drawn by `modelfleet report`,
    so no worker loads matplotlib): the confusion matrix, or a sample of (true, predicted) pairs;
    and the top feature importances or coefficients."""
    try:
        return _plot_data(model, task, y_test, predictions)
    except (ValueError, TypeError, IndexError) as exc:  # an unusual target (multi-output, ...)
        return {"unavailable": f"{type(exc).__name__}: {exc}"}  # the report says so; the model is fine


def _plot_data(model: Any, task: str, y_test: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"importances": importances(model)}
    if task == "classification":
        # numpy, not skm.confusion_matrix: its input checks cost a millisecond per model.
        labels = np.unique(np.concatenate([y_test, predictions]))
        k = len(labels)
        cells = np.searchsorted(labels, y_test) * k + np.searchsorted(labels, predictions)
        out["labels"] = [_plain(v) for v in labels]
        out["confusion"] = np.bincount(cells, minlength=k * k).reshape(k, k).tolist()
    else:
        step = max(len(y_test) // RESIDUAL_SAMPLE, 1)  # evenly spaced: the split is already shuffled
        out["y_true"] = [round(float(v), 6) for v in y_test[::step][:RESIDUAL_SAMPLE]]
        out["y_pred"] = [round(float(v), 6) for v in predictions[::step][:RESIDUAL_SAMPLE]]
    return out


def importances(model: Any) -> dict[str, Any] | None:
    """The top features by `feature_importances_` or by |`coef_`| (mean over classes), named
    where the model knows the names; None for models that have neither (k-NN, SVC with rbf)."""
    model = getattr(model, "best_estimator_", model)  # a search object: the refitted best
    estimator = model
    # Pipelines (the spec's own inside ours) and a transformed target wrap the real model.
    while hasattr(estimator, "steps") or hasattr(estimator, "regressor_"):
        estimator = estimator[-1] if hasattr(estimator, "steps") else estimator.regressor_
    values = _forest_importances(estimator)
    if values is None:
        values = getattr(estimator, "feature_importances_", None)
    kind = "importance"
    if values is None:
        coef = getattr(estimator, "coef_", None)
        if coef is None:
            return None
        coef = np.atleast_2d(np.asarray(coef, dtype=float))
        values, kind = ((coef[0], "coefficient") if coef.shape[0] == 1 else
                        (np.abs(coef).mean(axis=0), "mean |coefficient|"))
    values = np.asarray(values, dtype=float)
    names = _feature_names(model, len(values))
    order = np.argsort(-np.abs(values))[:TOP_FEATURES]
    return {"kind": kind, "n_features": len(values),
            "features": [[names[i], round(float(values[i]), 6)] for i in order]}


def _forest_importances(estimator: Any) -> np.ndarray | None:
    """A forest's mean decrease in impurity, as scikit-learn computes it but without its joblib
    round (4 ms for 100 trees, as long as the predictions); None for any other model."""
    # Only where the class computes importances itself (a bagging ensemble's trees may each
    # see a subset of the features).
    trees = getattr(estimator, "estimators_", None)
    if not hasattr(type(estimator), "feature_importances_") or not isinstance(trees, list):
        return None
    if not trees or not all(hasattr(t, "tree_") for t in trees):
        return None
    per_tree = [t.tree_.compute_feature_importances() for t in trees if t.tree_.node_count > 1]
    if not per_tree:
        return None
    mean = np.mean(per_tree, axis=0)
    return np.asarray(mean / mean.sum())


def _feature_names(model: Any, n: int) -> list[str]:
    try:
        names = [str(v) for v in (model[:-1].get_feature_names_out() if hasattr(model, "steps")
                                  else getattr(model, "feature_names_in_", []))]
    except Exception:  # a step that cannot name its outputs: fall back to positions
        names = []
    return names if len(names) == n else [f"x{i}" for i in range(n)]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
