"""Import skops with its list of scikit-learn estimator names read from disk.

At import, skops builds its default trusted types from `sklearn.utils.all_estimators()`,
which imports every estimator module of scikit-learn (~220 modules, and pytest where it
is installed) to keep only their names: ~0.3 s of CPU at every worker start, before its
first ping. The names change only with the installed scikit-learn and skops, so the
first import stores them under `check_cache_dir` and a later one gives skops those names
(objects carrying a module and a name, all skops reads of them) instead. skops' lists come
out the same; scikit-learn's own function is back in place once skops is imported. An
estimator module that no stage has imported yet is then imported by the first model that
uses it, in the pool child.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workers.store import atomic_write


def names_file(directory: Path) -> Path:
    versions = "-".join(importlib.metadata.version(d) for d in ("scikit-learn", "skops"))
    return Path(directory) / f"sklearn-estimator-names-{versions}.json"


def _stored(path: Path) -> list[tuple[str, str]] | None:
    try:
        pairs = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(pairs, list) or not pairs
            or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and s for s in p)
                       for p in pairs)):
        return None
    return [(module, name) for module, name in pairs]


@contextlib.contextmanager
def _all_estimators_replaced(replacement: Callable[..., Any]) -> Iterator[None]:
    import sklearn.utils

    real = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = replacement
    try:
        yield
    finally:
        sklearn.utils.all_estimators = real


def import_skops(directory: Path | None) -> None:
    """`import skops.io`, its estimator names from `directory` (stored there on a miss)."""
    if "skops.io" in sys.modules or directory is None:
        import skops.io  # noqa: F401
        return
    from sklearn.utils import all_estimators

    path = names_file(directory)
    stored = _stored(path)
    found: list[tuple[str, str]] = []

    def recorded(*args: Any, **kwargs: Any) -> list[tuple[str, type]]:
        estimators = all_estimators(*args, **kwargs)
        if not args and not kwargs:  # skops' own call: every estimator
            found.extend((cls.__module__, cls.__name__) for _, cls in estimators)
        return list(estimators)

    def from_disk(*args: Any, **kwargs: Any) -> list[tuple[str, Any]]:
        if args or kwargs:  # not the call this file answers
            return list(all_estimators(*args, **kwargs))
        assert stored is not None
        return [(name, types.SimpleNamespace(__module__=module, __name__=name)) for module, name in stored]

    with _all_estimators_replaced(recorded if stored is None else from_disk):
        import skops.io  # noqa: F401
    trusted = sys.modules.get("skops.io._trusted_types")  # bound the stand-in by name at import
    if trusted is not None and getattr(trusted, "all_estimators", None) in (recorded, from_disk):
        trusted.all_estimators = all_estimators  # type: ignore[attr-defined]
    if stored is None and found:
        with contextlib.suppress(OSError):  # a read-only directory only costs the next import
            atomic_write(path, json.dumps(found).encode())
