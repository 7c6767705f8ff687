"""Import skops with its list of scikit-learn estimator names read from disk.

At import, skops builds its default trusted types from `sklearn.utils.all_estimators()`,
which imports every estimator module of scikit-learn (~220 modules, and pytest where it
is installed) to keep only their names: ~0.3 s of CPU at every worker start, before its
first ping. The names change only with the installed scikit-learn and skops, so the
first import stores them under `check_cache_dir` and a later one gives skops those names
(objects carrying a module and a name, all skops reads of them) instead. skops' lists come
out the same; scikit-learn's own function is back in place once skops is imported, and a
skops that fails on them or makes other than one name of each (one that reads more than a
module and a name) is imported again in full. An estimator module that no stage has
imported yet is then imported by the first model that uses it, in the pool child.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workers.store import atomic_write

log = logging.getLogger(__name__)


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

    if stored is not None:
        try:
            made = _import_with(from_disk, all_estimators)
        except Exception:  # any failure on the stand-ins: the full import below
            made = -1
        if made == len(stored):
            return
        # This skops failed on the stand-ins or made other than one name of each (one that
        # reads more of the classes than their module and name): import it as it is.
        log.warning("skops did not take the stored estimator names; importing it in full")
        for name in [m for m in sys.modules if m == "skops" or m.startswith("skops.")]:
            del sys.modules[name]
    _import_with(recorded, all_estimators)
    if found:
        with contextlib.suppress(OSError):  # a read-only directory only costs the next import
            atomic_write(path, json.dumps(found).encode())


def _import_with(replacement: Callable[..., Any], real: Callable[..., Any]) -> int:
    """`import skops.io` with `replacement` as scikit-learn's `all_estimators`; returns how
    many estimator names skops made of it."""
    with _all_estimators_replaced(replacement):
        import skops.io  # noqa: F401
    trusted = sys.modules.get("skops.io._trusted_types")  # bound the stand-in by name at import
    if trusted is None:
        return -1
    if getattr(trusted, "all_estimators", None) is replacement:
        trusted.all_estimators = real  # type: ignore[attr-defined]
    return len(getattr(trusted, "SKLEARN_ESTIMATOR_TYPE_NAMES", ()))
