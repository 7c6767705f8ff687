"""The team's own code in the step cache's keys.

A model may use classes from allow-listed packages other than scikit-learn (whose
version is already in every key). Each such top-level package is keyed by its
installed distribution's version, or, when it is not installed as a distribution
(on PYTHONPATH) or installed editable, by a hash of its source files: an edit then
invalidates the steps that ran it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from workers.contracts import ModelSpec

# Keyed by LIBRARY_VERSIONS (workers/cache.py) already.
_KEYED_ELSEWHERE = frozenset({"sklearn"})


def class_paths(model: ModelSpec) -> set[str]:
    """Every class path a model's estimator and search space name, at any depth."""
    found: set[str] = set()
    _walk(model.estimator.model_dump(), found)
    if model.search is not None:
        _walk(model.search.space, found)
    return found


def code_versions(paths: Iterable[str]) -> dict[str, str]:
    """Top-level package -> `dist==version` or `sha256:...` of its sources, for non-sklearn classes."""
    packages = sorted({p.split(".")[0] for p in paths} - _KEYED_ELSEWHERE)
    return {top: package_version(top) for top in packages}


@functools.cache
def package_version(top: str) -> str:
    """Computed once per process: a worker runs the code it imported when it started."""
    for dist in _distributions().get(top, []):
        if not _editable(dist):
            return f"{dist}=={importlib.metadata.version(dist)}"
    return f"sha256:{source_hash(top)}"


def source_hash(top: str) -> str:
    """sha256 over the package's .py files (relative path and content), or the module's one file."""
    spec = importlib.util.find_spec(top)
    digest = hashlib.sha256()
    if spec is None:
        return "not-importable"
    if spec.submodule_search_locations:
        roots = [Path(p) for p in spec.submodule_search_locations]
        files = sorted((f.relative_to(root).as_posix(), f) for root in roots for f in root.rglob("*.py"))
    elif spec.origin:
        files = [(Path(spec.origin).name, Path(spec.origin))]
    else:
        return "no-source"
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _editable(dist: str) -> bool:
    """Installed with `pip install -e`: its version does not change when its code does."""
    text = importlib.metadata.distribution(dist).read_text("direct_url.json")
    try:
        return bool(text and json.loads(text).get("dir_info", {}).get("editable"))
    except (ValueError, AttributeError):
        return False


def _walk(value: Any, found: set[str]) -> None:
    for item in _values(value):
        if isinstance(item, dict) and isinstance(item.get("class_path"), str):
            found.add(item["class_path"])


def _values(value: Any) -> Iterator[Any]:
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from _values(child)
