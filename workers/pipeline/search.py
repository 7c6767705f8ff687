"""Hyperparameter search around a model's estimator with scikit-learn's search classes.

The deployed model is the best candidate refitted on all training rows; the search's
record (best params, score, a capped trial table, seconds) is plain JSON, with each
candidate's values written as the spec gave them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

from workers.contracts import CLASSIFICATION_METRICS, LOWER_IS_BETTER, REGRESSION_METRICS, SearchSpec
from workers.pipeline.errors import PipelineError
from workers.pipeline.estimators import build_value, check_param

# The spec's metric names as scikit-learn scorers; error metrics are negated by scikit-learn.
SCORERS = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "f1_macro": "f1_macro",
           "precision_macro": "precision_macro", "recall_macro": "recall_macro", "r2": "r2",
           "mae": "neg_mean_absolute_error", "rmse": "neg_root_mean_squared_error",
           "mape": "neg_mean_absolute_percentage_error"}
# Trials kept in the run record, best first; `n_trials` says how many ran.
MAX_TRIALS_RECORDED = 50


@dataclass(frozen=True)
class Search:
    """A ready search, and its space both as the spec gave it and as built objects."""

    cv: GridSearchCV | RandomizedSearchCV
    metric: str
    space: dict[str, list[Any]]
    built: dict[str, list[Any]]
    # What the searched object calls the estimator's params (a Pipeline around it: estimator__).
    prefix: str = ""


def around(search: Search, model: Any, prefix: str) -> Search:
    """The same search over `model`, a Pipeline holding the estimator under `prefix`: each
    candidate then refits the features too, so no fold's scaler or encoder sees its
    validation rows. The built values are handed on as they are (found by identity later)."""
    grid = {prefix + name: values for name, values in search.built.items()}
    key = "param_grid" if isinstance(search.cv, GridSearchCV) else "param_distributions"
    cv = type(search.cv)(**{**search.cv.get_params(deep=False), "estimator": model, key: grid})
    return replace(search, cv=cv, prefix=prefix)


def build_search(estimator: Any, spec: SearchSpec, metric: str, task: str,
                 allowed_prefixes: Sequence[str]) -> Search:
    """The search over `spec.space`, every value built and checked against `estimator` now."""
    metrics = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in metrics:
        raise PipelineError("search.metric", f"{metric!r} is not a {task} metric; choose from {metrics}")
    built: dict[str, list[Any]] = {}
    names = estimator.get_params(deep=True)
    for name, values in spec.space.items():
        field = f"search.space.{name}"
        if name not in names:
            raise PipelineError(field, f"{type(estimator).__name__} has no parameter {name!r}; nested "
                                "ones are written step__param")
        built[name] = [build_value(v, allowed_prefixes, f"{field}[{i}]") for i, v in enumerate(values)]
        for i, value in enumerate(built[name]):
            check_param(estimator, name, value, f"{field}[{i}]")
    # One process per worker (threads pinned to one): the search must not fork its own pool.
    common: dict[str, Any] = {"scoring": SCORERS[metric], "cv": spec.cv, "n_jobs": 1, "refit": True,
                              "error_score": np.nan}
    cv: GridSearchCV | RandomizedSearchCV
    if spec.kind == "grid":
        cv = GridSearchCV(estimator, built, **common)
    else:
        cv = RandomizedSearchCV(estimator, built, n_iter=spec.n_iter, random_state=spec.seed, **common)
    return Search(cv, metric, dict(spec.space), built)


def run_search(search: Search, X: np.ndarray, y: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """(the refitted best estimator, the search's record)."""
    started = time.perf_counter()
    search.cv.fit(X, y)
    seconds = time.perf_counter() - started
    res = search.cv.cv_results_
    sign = -1.0 if search.metric in LOWER_IS_BETTER else 1.0
    order = sorted(range(len(res["params"])), key=lambda i: int(res["rank_test_score"][i]))
    trials = [{"rank": int(res["rank_test_score"][i]), "params": _as_spec(search, res["params"][i]),
               "mean": _finite(sign * res["mean_test_score"][i]),
               "std": _finite(res["std_test_score"][i]),
               "fit_seconds": round(float(res["mean_fit_time"][i]), 6)}
              for i in order[:MAX_TRIALS_RECORDED]]
    return search.cv.best_estimator_, {
        "metric": search.metric, "kind": type(search.cv).__name__, "cv": search.cv.cv,
        "best_params": _as_spec(search, search.cv.best_params_),
        "best_score": _finite(sign * search.cv.best_score_), "n_trials": len(res["params"]),
        "seconds": round(seconds, 6), "trials": trials}


def _as_spec(search: Search, params: dict[str, Any]) -> dict[str, Any]:
    """A candidate's values as the spec wrote them (built estimators are found by identity)."""
    out = {}
    for name, value in params.items():
        name = name.removeprefix(search.prefix)
        index = next((i for i, b in enumerate(search.built[name]) if b is value), None)
        out[name] = (search.space[name][index] if index is not None else
                     value if isinstance(value, str | int | float | bool | None) else repr(value))
    return out


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
