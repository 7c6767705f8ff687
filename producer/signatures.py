"""The estimator signature table on disk, so `submit` checks estimators without importing
scikit-learn (about 2 s of CPU at every CLI start) once it has seen their classes.

One JSON file per installed scikit-learn version and version of the check's own code
(workers/pipeline: estimators, search, signatures), under `MODELFLEET_CHECK_CACHE_DIR`. A
scikit-learn class is added the first time a real check imports it; after that a spec whose
estimator the table vouches for (`signatures.accepts`) is accepted without the import.

What a signature cannot vouch for (the team's own classes, whose `__init__` may check
values; estimators nested in a Pipeline or a search space) is remembered as a whole: a
real check that passed records its spec, the allow-list and the version of every team
package it names (`usercode.code_versions`: an edit of the team's code is a new key).
Any other spec takes the real check, which gives the same verdict and the same message
as before: a check that failed is never remembered.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from workers import usercode
from workers.contracts import CLASSIFICATION_METRICS, REGRESSION_METRICS, ModelSpec
from workers.pipeline import signatures
from workers.store import atomic_write

# The modules whose code decides what a check accepts: a change to one starts a new table.
_CHECK_CODE = ("estimators.py", "search.py", "signatures.py")
# The file's layout: {"classes": {class path: description}, "passed": [check key, ...]}.
_FORMAT = "v2"
# Passed checks kept (the newest): each distinct spec of a team class or a nested estimator adds one.
MAX_PASSED = 5000


class SignatureTable:
    """Class path -> `estimators.describe` of it, and the keys of whole checks that passed;
    read once per command, written if it grew."""

    def __init__(self, path: Path | None, entries: dict[str, Any] | None = None,
                 passed: list[str] | None = None) -> None:
        self.path = path
        self.entries: dict[str, Any] = entries or {}
        self.passed: dict[str, None] = dict.fromkeys(passed or [])  # oldest first
        self.grown = False

    @classmethod
    def open(cls, directory: Path | None) -> SignatureTable:
        """The table for the installed scikit-learn; an empty one without a directory, or
        when it cannot be read (a missing or damaged file is only a slower check)."""
        if directory is None:
            return cls(None)
        try:
            version = importlib.metadata.version("scikit-learn")
        except importlib.metadata.PackageNotFoundError:
            return cls(None)
        path = Path(directory) / f"sklearn-{version}-{_code_digest()}-{_FORMAT}.json"
        try:
            stored = json.loads(path.read_text())
            entries, passed = dict(stored["classes"]), [str(k) for k in stored["passed"]]
        except (OSError, ValueError, TypeError, KeyError):
            entries, passed = {}, []
        return cls(path, entries, passed)

    def accepts(self, model: ModelSpec, allowed_prefixes: list[str]) -> bool:
        """Whether the table proves the model's estimator (and search) pass the real check."""
        search = None
        if model.search is not None:
            search = {"metric": model.search_metric, "space": model.search.space}
        metrics = CLASSIFICATION_METRICS if model.task == "classification" else REGRESSION_METRICS
        return signatures.accepts(self.entries, model.estimator.model_dump(), model.task,
                                  allowed_prefixes, search, metrics)

    def passed_before(self, model: ModelSpec, allowed_prefixes: list[str]) -> bool:
        """Whether a real check of this very spec passed before, on the same code."""
        return bool(self.passed) and (key := _check_key(model, allowed_prefixes)) is not None \
            and key in self.passed

    def learn(self, model: ModelSpec, allowed_prefixes: list[str], passed: bool) -> None:
        """Add the scikit-learn classes the model names (a real check imported them already),
        and the check's key where it passed and the signatures alone cannot vouch for it."""
        from workers.pipeline.errors import PipelineError
        from workers.pipeline.estimators import describe, resolve_class

        for path in sorted(usercode.class_paths(model)):
            if path in self.entries or not path.startswith("sklearn."):
                continue
            try:
                described = describe(resolve_class(path, allowed_prefixes))
            except PipelineError:
                continue
            if described is not None:
                self.entries[path] = described
                self.grown = True
        if passed and self.path is not None and not self.accepts(model, allowed_prefixes) \
                and (key := _check_key(model, allowed_prefixes)) is not None:
            self.passed.pop(key, None)
            self.passed[key] = None
            while len(self.passed) > MAX_PASSED:
                del self.passed[next(iter(self.passed))]
            self.grown = True

    def save(self) -> None:
        """Write the table if it grew (atomically: a concurrent reader sees the old or the new)."""
        if self.path is None or not self.grown:
            return
        with contextlib.suppress(OSError):  # a read-only directory only costs the next check
            atomic_write(self.path, json.dumps({"classes": self.entries, "passed": list(self.passed)},
                                               sort_keys=True).encode())
            self.grown = False


def _code_digest() -> str:
    here = Path(signatures.__file__).parent
    digest = hashlib.sha256()
    for name in _CHECK_CODE:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.hexdigest()[:16]


def _check_key(model: ModelSpec, allowed_prefixes: list[str]) -> str | None:
    """Everything the real check reads besides scikit-learn and its own code (both in the
    file's name): the task, the estimator, the search, the allow-list and the team's code.
    None where the check is not remembered: a class outside the allow-list (refused, never
    imported), or a package whose source cannot be read."""
    paths = usercode.class_paths(model)
    if not all(signatures.allowed_path(p, allowed_prefixes) for p in paths):
        return None
    try:
        versions = usercode.code_versions(paths)
    except (OSError, ValueError, ImportError):
        return None
    search = None if model.search is None else [model.search.model_dump(mode="json"), model.search_metric]
    text = json.dumps([model.task, model.estimator.model_dump(mode="json"), search, sorted(allowed_prefixes),
                       versions], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
