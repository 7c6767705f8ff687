"""Resolve an estimator from an allow-listed dotted class path, never anything else."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from sklearn.base import BaseEstimator, is_classifier, is_regressor

from workers.contracts import EstimatorSpec
from workers.pipeline.errors import PipelineError


def resolve_class(class_path: str, allowed_prefixes: Sequence[str]) -> type[BaseEstimator]:
    """The estimator class, checked against the allow-list *before* anything is imported."""
    field = "estimator.class_path"
    if not any(class_path.startswith(p) for p in allowed_prefixes):
        raise PipelineError(field, f"{class_path!r} is not under an allowed prefix {list(allowed_prefixes)}")
    parts = class_path.split(".")
    if len(parts) < 2 or any(not p or p.startswith("_") for p in parts):
        raise PipelineError(field, f"{class_path!r} must be a public dotted path like sklearn.svm.SVC")
    module_name, attr = ".".join(parts[:-1]), parts[-1]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineError(field, f"module {module_name!r} cannot be imported") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise PipelineError(field, f"{class_path!r} is not a scikit-learn estimator class")
    # A re-export could point outside the allow-list; check where the class really lives.
    if not any((cls.__module__ + ".").startswith(p) for p in allowed_prefixes):
        raise PipelineError(field, f"{class_path!r} is defined in {cls.__module__!r}, not allowed")
    return cls


def build_estimator(spec: EstimatorSpec, task: str, allowed_prefixes: Sequence[str]) -> Any:
    """An unfitted estimator with validated params, of the kind the task needs."""
    cls = resolve_class(spec.class_path, allowed_prefixes)
    est = cls()
    kind = "classifier" if task == "classification" else "regressor"
    if not (is_classifier(est) if kind == "classifier" else is_regressor(est)):
        raise PipelineError("estimator.class_path", f"{spec.class_path!r} is not a {kind}")
    unknown = sorted(set(spec.params) - set(est.get_params(deep=False)))
    if unknown:
        raise PipelineError(f"estimator.params.{unknown[0]}",
                            f"unknown parameter(s) {unknown} for {cls.__name__}")
    est.set_params(**spec.params)
    validate = getattr(est, "_validate_params", None)
    if callable(validate):  # scikit-learn >= 1.2 checks param types and ranges here
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise PipelineError("estimator.params", str(exc)) from exc
    return est
