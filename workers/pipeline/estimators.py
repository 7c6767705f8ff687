"""Build estimators from allow-listed dotted class paths, nested ones included, never anything else.

A param value `{class_path, params}` is itself an estimator (a pipeline's steps, an
ensemble's or a meta-estimator's base estimators), and a list item `[name, estimator, ...]`
becomes the tuple that Pipeline, ColumnTransformer and the ensembles take. Every level is
allow-listed before anything is imported and its params are checked; an error names the
field path, e.g. `estimator.params.steps[1][1].class_path`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections.abc import Sequence
from numbers import Integral
from typing import Any

from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor

from workers.contracts import EstimatorSpec
from workers.pipeline.errors import PipelineError
from workers.pipeline.signatures import Constraint, allowed_path, public_path

_ESTIMATOR_KEYS = frozenset({"class_path", "params"})


def is_estimator_spec(value: Any) -> bool:
    """Whether a param value stands for an estimator: a mapping with a `class_path`."""
    return isinstance(value, dict) and "class_path" in value


def resolve_class(class_path: str, allowed_prefixes: Sequence[str],
                  field: str = "estimator.class_path") -> type[BaseEstimator]:
    """The estimator class, checked against the allow-list *before* anything is imported."""
    if not allowed_path(class_path, allowed_prefixes):
        raise PipelineError(field, f"{class_path!r} is not under an allowed prefix {list(allowed_prefixes)} "
                            "(MODELFLEET_ALLOWED_ESTIMATOR_PREFIXES)")
    if not public_path(class_path):
        raise PipelineError(field, f"{class_path!r} must be a public dotted path like sklearn.svm.SVC")
    module_name, _, attr = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineError(field, f"module {module_name!r} cannot be imported") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise PipelineError(field, f"{class_path!r} is not a scikit-learn estimator class"
                            + _did_you_mean(module, module_name, attr))
    # A re-export could point outside the allow-list; check where the class really lives.
    if not allowed_path(cls.__module__ + ".", allowed_prefixes):
        raise PipelineError(field, f"{class_path!r} is defined in {cls.__module__!r}, not allowed")
    return cls


def _did_you_mean(module: Any, module_name: str, attr: str) -> str:
    """`; did you mean module.Name?` for the closest public estimator class of `module`, if any
    is close: a typo (`RandomForestClassifer`) is the commonest wrong class path."""
    public = [n for n in getattr(module, "__all__", None) or dir(module) if not n.startswith("_")]
    classes = [n for n in public if isinstance(getattr(module, n, None), type)
               and issubclass(getattr(module, n), BaseEstimator)]
    close = difflib.get_close_matches(attr, classes, n=1)
    return f"; did you mean {module_name}.{close[0]}?" if close else ""


# Estimator specs (their JSON, task and allow-list) whose params and kind passed the checks in
# this process: the same spec passes again, so a worker skips scikit-learn's param checks
# (`inspect.signature` and the constraints: ~70-130 us a small model's estimator) on later
# deliveries. Every class path is still allow-listed and resolved on every build.
_PASSED: dict[tuple[str, str, tuple[str, ...]], None] = {}
_MAX_PASSED = 4096


def build_estimator(spec: EstimatorSpec, task: str, allowed_prefixes: Sequence[str]) -> Any:
    """An unfitted estimator (nested ones built too) with validated params, of the task's kind."""
    key = (spec.model_dump_json(), task, tuple(allowed_prefixes))
    if key in _PASSED:
        return build_node(spec.model_dump(), allowed_prefixes, "estimator", checked=True)
    est = build_node(spec.model_dump(), allowed_prefixes, "estimator")
    kind = "classifier" if task == "classification" else "regressor"
    if not (is_classifier(est) if kind == "classifier" else is_regressor(est)):
        raise PipelineError("estimator.class_path", f"{spec.class_path!r} is not a {kind}")
    if len(_PASSED) >= _MAX_PASSED:
        del _PASSED[next(iter(_PASSED))]  # the oldest
    _PASSED[key] = None
    return est


def build_node(node: dict[str, Any], allowed_prefixes: Sequence[str], field: str,
               checked: bool = False) -> Any:
    """One `{class_path, params}` mapping at `field` as an estimator; its params built first.

    `checked`: this very node passed the param checks before (build_estimator's memo); its
    classes are still allow-listed and resolved, and constructed with the same values."""
    if checked:
        cls = resolve_class(node["class_path"], allowed_prefixes, f"{field}.class_path")
        return cls(**{k: build_value(v, allowed_prefixes, f"{field}.params.{k}", checked=True)
                      for k, v in (node.get("params") or {}).items()})
    extra = sorted(set(node) - _ESTIMATOR_KEYS)
    if extra:
        raise PipelineError(f"{field}.{extra[0]}", "an estimator is a mapping of 'class_path' and "
                            f"'params' only; unknown key(s) {extra}")
    class_path, params = node["class_path"], node.get("params") or {}
    if not isinstance(class_path, str):
        raise PipelineError(f"{field}.class_path", "must be a dotted class path (a string)")
    if not isinstance(params, dict):
        raise PipelineError(f"{field}.params", "must be a mapping of parameter names to values")
    cls = resolve_class(class_path, allowed_prefixes, f"{field}.class_path")
    known = set(cls._get_param_names())
    unknown = sorted(set(params) - known)
    if unknown:
        raise PipelineError(f"{field}.params.{unknown[0]}",
                            f"unknown parameter(s) {unknown} for {cls.__name__}")
    if params.get("memory") is not None:  # joblib's cache would pickle to and unpickle from disk
        raise PipelineError(f"{field}.params.memory", "caching a pipeline's steps on disk is not "
                            "supported (it pickles); leave memory unset")
    values = {k: build_value(v, allowed_prefixes, f"{field}.params.{k}") for k, v in params.items()}
    try:
        est = cls(**values)
    except TypeError as exc:  # a required argument (Pipeline's steps) is missing
        missing = sorted(p for p in known - set(params) if p in _required(cls))
        at = f"{field}.params.{missing[0]}" if missing else f"{field}.params"
        raise PipelineError(at, f"{cls.__name__}: {exc}") from exc
    except Exception as exc:  # a team's class may check its params in __init__: still the spec's fault
        raise PipelineError(f"{field}.params", f"{cls.__name__}: {type(exc).__name__}: {exc}") from exc
    _validate(est, f"{field}.params")
    return est


def build_value(value: Any, allowed_prefixes: Sequence[str], field: str, checked: bool = False) -> Any:
    """A param value with every estimator mapping in it built; named lists become tuples."""
    if is_estimator_spec(value):
        return build_node(value, allowed_prefixes, field, checked)
    if isinstance(value, dict):
        return {k: build_value(v, allowed_prefixes, f"{field}.{k}", checked) for k, v in value.items()}
    if not isinstance(value, list):
        return value
    built = [build_value(v, allowed_prefixes, f"{field}[{i}]", checked) for i, v in enumerate(value)]
    # [[name, estimator, ...], ...]: Pipeline steps, ensemble members, ColumnTransformer parts.
    if any(isinstance(v, list) and len(v) >= 2 and isinstance(v[0], str) and is_estimator_spec(v[1])
           for v in value):
        return [tuple(b) if isinstance(v, list) and v and isinstance(v[0], str) else b
                for v, b in zip(value, built, strict=True)]
    return built


def check_param(est: Any, name: str, value: Any, field: str) -> None:
    """Refuse `value` for the (possibly nested, `step__param`) param `name` of `est` now, not in a fit."""
    trial = clone(est)
    try:
        trial.set_params(**{name: value})
    except (ValueError, TypeError) as exc:
        raise PipelineError(field, str(exc)) from exc
    owner_name = name.rpartition("__")[0]
    owner = trial.get_params(deep=True)[owner_name] if owner_name else trial
    if hasattr(owner, "get_params"):
        _validate(owner, field)


# scikit-learn's own checks that need no data, and the param each one is about: types and
# ranges (>= 1.2), a pipeline's steps (all but the last transformers), an ensemble's members.
_CHECKS = {"_validate_params": "", "_validate_steps": ".steps", "_validate_estimators": ".estimators"}


def _validate(est: Any, field: str) -> None:
    for name, param in _CHECKS.items():
        check = getattr(est, name, None)
        # A team's estimator need not declare constraints; scikit-learn's check needs them.
        if name == "_validate_params" and not hasattr(est, "_parameter_constraints"):
            continue
        if callable(check):
            try:
                check()
            except (ValueError, TypeError) as exc:
                raise PipelineError(field + param, str(exc)) from exc


def _required(cls: type) -> set[str]:
    return {n for n, p in inspect.signature(cls).parameters.items()
            if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def describe(cls: type) -> dict[str, Any] | None:
    """What `signatures.accepts` needs of a scikit-learn class, as JSON: its params, their
    constraints and its kind. None for a class it cannot vouch for: one that needs arguments,
    checks its steps or members, validates its own way, or a team's (whose `__init__` may
    check its params)."""
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)
            and cls.__module__.startswith("sklearn.")):
        return None
    if (_required(cls) or any(hasattr(cls, name) for name in _CHECKS if name != "_validate_params")
            or getattr(cls, "_validate_params", None) is not BaseEstimator._validate_params):
        return None
    try:
        est = cls()
        _validate(est, "")
    except Exception:  # the defaults alone do not pass: leave the class to the real check
        return None
    constraints = getattr(cls, "_parameter_constraints", None)
    return {"module": cls.__module__, "name": cls.__name__, "params": sorted(cls._get_param_names()),  # type: ignore[attr-defined]
            "constraints": None if constraints is None else {
                name: c if c == "no_validation" else [_constraint(x) for x in c]
                for name, c in constraints.items()},
            "kind": "classifier" if is_classifier(est) else "regressor" if is_regressor(est) else None}


def _constraint(raw: Any) -> Constraint:
    """One of scikit-learn's parameter constraints as data (the kinds `signatures` reads)."""
    from sklearn.utils import _param_validation as pv

    c = raw if isinstance(raw, pv._Constraint) else pv.make_constraint(raw)
    if isinstance(c, pv._InstancesOf):
        return ["type", c.type.__module__, c.type.__qualname__]
    if isinstance(c, pv._NoneConstraint):
        return ["none"]
    if isinstance(c, pv._NanConstraint):
        return ["nan"]
    if isinstance(c, pv.Interval):
        return ["interval", c.type.__name__, _number(c.left), _number(c.right), c.closed]
    if isinstance(c, pv.Options) and all(type(o) in (str, int, float, bool) for o in c.options):
        # Without inf (as in {np.inf}): JSON has no such number, and a spec refuses one.
        finite = [o for o in c.options if not isinstance(o, float) or math.isfinite(o)]
        return ["options", c.type.__module__, c.type.__qualname__, sorted(finite, key=repr)]
    if isinstance(c, pv.HasMethods):
        return ["methods", list(c.methods)]
    if isinstance(c, pv._ArrayLikes):
        return ["array_like"]
    if isinstance(c, pv._IterablesNotString):
        return ["iterable"]
    if isinstance(getattr(c, "_constraints", None), list):  # random_state, boolean, verbose, cv, ...
        return ["any", [_constraint(x) for x in c._constraints]]
    return ["never"]  # pandas.NA, sparse matrices, callables, a kind added later: no shortcut


def _number(value: Any) -> int | float | None:
    """An interval's bound for JSON: an infinite one is None, as scikit-learn reads None."""
    if value is None or isinstance(value, Integral):
        return None if value is None else int(value)
    return float(value) if math.isfinite(value) else None
