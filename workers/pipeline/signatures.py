"""Check an estimator spec against a class's signature written down as data, without
importing scikit-learn (about 2 s of a CLI's start, 3.6 s on a loaded machine).

`estimators.describe(cls)` writes down a class's parameter names, its parameter
constraints (`_parameter_constraints`), and whether it is a classifier or a regressor.
`accepts(...)` (no scikit-learn) says True only where those facts prove that
`build_estimator` and `build_search` accept the spec; anything else (an unknown class, a
nested estimator, a value no recorded constraint admits) is False, and the caller runs the
real check, which gives the error message. So the table makes a check faster, never different.
"""

from __future__ import annotations

import builtins
import collections.abc
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

# A constraint as data: [kind, ...]. A value satisfies a param if it satisfies one of them.
Constraint = list[Any]


def allowed_path(class_path: str, allowed_prefixes: Sequence[str]) -> bool:
    """Whether a dotted path is under one of the allow-listed prefixes."""
    return any(class_path.startswith(p) for p in allowed_prefixes)


def public_path(class_path: str) -> bool:
    """A public dotted path like sklearn.svm.SVC: two parts or more, no private part."""
    parts = class_path.split(".")
    return len(parts) >= 2 and all(p and not p.startswith("_") and p.isidentifier() for p in parts)


def accepts(table: Mapping[str, Any], estimator: Mapping[str, Any], task: str,
            allowed_prefixes: Sequence[str], search: Mapping[str, Any] | None = None,
            metrics: Sequence[str] = ()) -> bool:
    """True where the table proves that the estimator (and the search over its params, with
    `metrics` the task's metric names) passes the real check; False where it cannot tell."""
    entry = _entry(table, estimator, allowed_prefixes)
    if entry is None or entry["kind"] != ("classifier" if task == "classification" else "regressor"):
        return False
    params = estimator.get("params") or {}
    if params.get("memory") is not None or not all(_admits(entry, k, v) for k, v in params.items()):
        return False
    if search is None:
        return True
    return search["metric"] in metrics and all(
        _admits(entry, name, v) for name, values in search["space"].items() for v in values)


def _entry(table: Mapping[str, Any], node: Mapping[str, Any],
           allowed_prefixes: Sequence[str]) -> dict[str, Any] | None:
    class_path, params = node.get("class_path"), node.get("params") or {}
    if (set(node) - {"class_path", "params"} or not isinstance(class_path, str)
            or not isinstance(params, dict) or not allowed_path(class_path, allowed_prefixes)
            or not public_path(class_path)):
        return None
    entry = table.get(class_path)
    if entry is None or not allowed_path(entry["module"] + ".", allowed_prefixes):
        return None
    return dict(entry)


def _admits(entry: Mapping[str, Any], name: str, value: Any) -> bool:
    """A plain value (no estimator in it) for a known param that one of its constraints admits."""
    if name not in entry["params"] or _holds_estimator(value):
        return False
    constraints = entry["constraints"]
    if constraints is None or name not in constraints or constraints[name] == "no_validation":
        return True  # scikit-learn checks nothing for this param
    return any(_satisfies(c, value) for c in constraints[name])


def _holds_estimator(value: Any) -> bool:
    if isinstance(value, dict):
        return "class_path" in value or any(_holds_estimator(v) for v in value.values())
    return isinstance(value, list) and any(_holds_estimator(v) for v in value)


_TYPE_MODULES = {"builtins": builtins, "numbers": numbers, "collections.abc": collections.abc}


def _satisfies(c: Constraint, value: Any) -> bool:
    """scikit-learn's `is_satisfied_by` for a value read from YAML; False where not known."""
    kind = c[0]
    if kind == "none":
        return value is None
    if kind == "nan":
        return (not isinstance(value, numbers.Integral) and isinstance(value, numbers.Real)
                and math.isnan(value))
    if kind == "type" or kind == "options":
        cls = _type(c[1], c[2])
        if cls is None or not isinstance(value, cls):
            return False
        try:
            return kind == "type" or value in set(c[3])
        except TypeError:  # unhashable: scikit-learn's `in` on its set would raise
            return False
    if kind == "interval":
        return _in_interval(c, value)
    if kind == "methods":
        return all(callable(getattr(value, m, None)) for m in c[1])
    if kind == "array_like":  # sklearn's _is_arraylike_not_scalar, for YAML's types
        return hasattr(value, "__len__") and not isinstance(value, str | bytes | numbers.Number)
    if kind == "iterable":
        return isinstance(value, collections.abc.Iterable) and not isinstance(value, str)
    if kind == "any":
        return any(_satisfies(x, value) for x in c[1])
    return False


def _type(module: str, qualname: str) -> type | None:
    if module == "sklearn.utils._param_validation" and qualname == "RealNotInt":
        return float  # RealNotInt is an ABC with float registered (and numpy's floats)
    if module.startswith("numpy"):
        return _NoValue  # numpy's types: no YAML value is an instance of one
    found = getattr(_TYPE_MODULES.get(module), qualname, None)
    return found if isinstance(found, type) else None


class _NoValue:
    """A type no YAML value is an instance of."""


def _in_interval(c: Constraint, value: Any) -> bool:
    _, kind, left, right, closed = c
    cls: Any = {"Integral": numbers.Integral, "Real": numbers.Real, "RealNotInt": float}.get(kind)
    if cls is None or not isinstance(value, cls):
        return False
    if not isinstance(value, numbers.Integral) and math.isnan(value):
        return False
    low = -math.inf if left is None else left
    high = math.inf if right is None else right
    if (value < low) if closed in ("left", "both") else (value <= low):
        return False
    return not ((value > high) if closed in ("right", "both") else (value >= high))
