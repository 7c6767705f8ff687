"""The data checks `submit` passed before, remembered, so checking a spec against the same
unchanged file again needs neither pandas nor scikit-learn (about 1.6 s of CPU at a start).

Two checks read a file dataset: its segment values (`inspect_csv`, for `segment_by`) and
the preparation of its whole table (columns, dates, lags, the split). A check that passed
is remembered under a key of everything it depends on: the spec fields it reads; the file
by its resolved path, device, inode, size and modification time (as the workers' own
in-process cache knows it); the versions of pandas, numpy, pyarrow and scikit-learn; and
the source of workers/pipeline and workers/contracts. A check that failed is not
remembered: it runs again and gives its own message.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import stat
from pathlib import Path
from typing import Any

from workers import contracts
from workers.contracts import CsvDataset, Dataset
from workers.pipeline import signatures
from workers.store import atomic_write

# Entries kept (the newest): every edit of a file adds one.
MAX_ENTRIES = 2000
_LIBRARIES = ("pandas", "numpy", "pyarrow", "scikit-learn")


class DataMemo:
    """Key -> the value a passed check returned, read once per command, written if it grew."""

    def __init__(self, path: Path | None, entries: dict[str, Any] | None = None) -> None:
        self.path = path
        self.entries: dict[str, Any] = entries or {}
        self.grown = False
        self._environment: list[str] | None = None

    @classmethod
    def open(cls, directory: Path | None) -> DataMemo:
        """The memo in `directory`; an empty one without it or when it cannot be read."""
        if directory is None:
            return cls(None)
        path = Path(directory) / "data-checks.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def key(self, check: str, fields: str, dataset: Dataset, data_root: Path) -> str | None:
        """The key of a check on `dataset` given the spec `fields` it reads; None when the
        file cannot be identified (the check then runs, and says why)."""
        if self.path is None:
            return None
        where: list[Any] = []
        if isinstance(dataset, CsvDataset):
            try:
                root = data_root.resolve()
                full = (root / dataset.path).resolve()
                found = full.stat()
            except (OSError, ValueError):
                return None
            if not stat.S_ISREG(found.st_mode):
                return None
            where = [str(root), dataset.path, str(full), found.st_dev, found.st_ino, found.st_size,
                     found.st_mtime_ns]
        text = json.dumps([check, fields, where, self._versions()])
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str | None) -> Any:
        """What the check returned when it passed under this key, or None."""
        return None if key is None else self.entries.get(key)

    def put(self, key: str | None, value: Any) -> None:
        if key is None or value is None:
            return
        self.entries.pop(key, None)
        self.entries[key] = value
        while len(self.entries) > MAX_ENTRIES:
            del self.entries[next(iter(self.entries))]
        self.grown = True

    def save(self) -> None:
        """Write the memo if it grew (atomically); a failed write only costs the next check."""
        if self.path is None or not self.grown:
            return
        with contextlib.suppress(OSError):  # a read-only directory only costs the next check
            atomic_write(self.path, json.dumps(self.entries).encode())  # oldest first
            self.grown = False

    def _versions(self) -> list[str]:
        if self._environment is None:
            versions = []
            for dist in _LIBRARIES:
                try:
                    versions.append(f"{dist}=={importlib.metadata.version(dist)}")
                except importlib.metadata.PackageNotFoundError:
                    versions.append(f"{dist} missing")
            self._environment = [*versions, _code_digest()]
        return self._environment


def _code_digest() -> str:
    """sha256 of the code the checks run: the pipeline modules and the spec contracts."""
    digest = hashlib.sha256()
    files = sorted(Path(signatures.__file__).parent.glob("*.py")) + [Path(contracts.__file__)]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
