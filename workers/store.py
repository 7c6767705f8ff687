"""Content-addressed artifact store under one root (a shared volume in compose)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class IntegrityError(RuntimeError):
    """An artifact's bytes no longer match its digest: refuse to load it."""


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write via a temp file and rename, so readers never see half a file (data: bytes or pieces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                fh.writelines(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ArtifactStore:
    """Objects named by the sha256 of their bytes, verified on every read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"

    def path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest[2:]

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        path = self.path(digest)
        if not path.exists():  # same bytes, same name: writing twice is a no-op
            atomic_write(path, data)
        return digest

    def get(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if digest_bytes(data) != digest:
            raise IntegrityError(f"artifact {digest[:12]} was modified on disk; refusing to load it")
        return data

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_json(self, obj: Any) -> str:
        return self.put(json.dumps(obj, sort_keys=True).encode())

    def get_json(self, digest: str) -> Any:
        return json.loads(self.get(digest))

    def write_record(self, relpath: str, obj: Any) -> None:
        """A JSON copy of an index record beside the artifacts, for `modelfleet reindex`."""
        atomic_write(self.root / relpath, json.dumps(obj, sort_keys=True, indent=1).encode())

    def iter_records(self, subdir: str) -> list[Any]:
        base = self.root / subdir
        return [json.loads(p.read_text()) for p in sorted(base.rglob("*.json"))] if base.exists() else []

    def usage(self) -> tuple[int, int]:
        """(number of objects, total bytes)."""
        files = [p for p in self.objects.rglob("*") if p.is_file()] if self.objects.exists() else []
        return len(files), sum(p.stat().st_size for p in files)
