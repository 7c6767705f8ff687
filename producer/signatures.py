"""The estimator signature table on disk, so `submit` checks estimators without importing
scikit-learn (about 2 s of CPU at every CLI start) once it has seen their classes.

One JSON file per installed scikit-learn version and version of the check's own code
(workers/pipeline: estimators, search, signatures), under `MODELFLEET_CHECK_CACHE_DIR`. A
class is added the first time a real check imports it; after that a spec whose estimator
the table vouches for (`signatures.accepts`) is accepted without the import, and any other
spec takes the real check, which gives the same verdict and the same message as before.
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


class SignatureTable:
    """Class path -> `estimators.describe` of it, read once per command, written if it grew."""

    def __init__(self, path: Path | None, entries: dict[str, Any] | None = None) -> None:
        self.path = path
        self.entries: dict[str, Any] = entries or {}
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
        path = Path(directory) / f"sklearn-{version}-{_code_digest()}.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def accepts(self, model: ModelSpec, allowed_prefixes: list[str]) -> bool:
        """Whether the table proves the model's estimator (and search) pass the real check."""
        search = None
        if model.search is not None:
            search = {"metric": model.search_metric, "space": model.search.space}
        metrics = CLASSIFICATION_METRICS if model.task == "classification" else REGRESSION_METRICS
        return signatures.accepts(self.entries, model.estimator.model_dump(), model.task,
                                  allowed_prefixes, search, metrics)

    def learn(self, model: ModelSpec, allowed_prefixes: list[str]) -> None:
        """Add the scikit-learn classes the model names (a real check imported them already)."""
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

    def save(self) -> None:
        """Write the table if it grew (atomically: a concurrent reader sees the old or the new)."""
        if self.path is None or not self.grown:
            return
        with contextlib.suppress(OSError):  # a read-only directory only costs the next check
            atomic_write(self.path, json.dumps(self.entries, sort_keys=True).encode())
            self.grown = False


def _code_digest() -> str:
    here = Path(signatures.__file__).parent
    digest = hashlib.sha256()
    for name in _CHECK_CODE:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.hexdigest()[:16]
