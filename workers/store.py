"""Content-addressed artifacts and JSON records under one artifact root.

The root is a directory (a shared volume in compose) or an S3 bucket prefix
(`s3://bucket/prefix`, see workers/s3.py); both are a `Root`: whole-object
writes that readers never see half done, reads, listing and deletes. Nothing
here relies on renames, appends or file locks, which object stores lack.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class IntegrityError(RuntimeError):
    """An artifact's bytes no longer match its digest: refuse to load it."""


class RootFull(OSError):
    """The artifact root has no space left (ENOSPC, EDQUOT): a stage retries, it does not fail."""


# What a full disk or an exhausted quota says.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write via a temp file and rename, so readers never see half a file (data: bytes or pieces).

    A full disk raises RootFull, and the partial temp file is gone: nothing half written
    ever has the name.
    """
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                fh.writelines(data)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            raise RootFull(exc.errno, f"no space left on the artifact root writing {path}") from exc
        raise


def read_or_empty(root: Root, relpath: str) -> bytes:
    """The bytes, or none if there is nothing there."""
    try:
        return root.read(relpath)
    except FileNotFoundError:
        return b""


@dataclass(frozen=True)
class Entry:
    """One stored file or object: its path under the root ('/'-separated), size, modification time."""

    relpath: str
    size: int
    mtime: float


class Root(Protocol):
    """Where the artifact root's files live; paths are '/'-separated and relative to it."""

    def write(self, relpath: str, data: bytes | Iterable[bytes]) -> None: ...
    def write_once(self, relpath: str, data: bytes) -> None:
        """Write unless it exists (content-addressed: same name, same bytes)."""
    def read(self, relpath: str) -> bytes:
        """The bytes; FileNotFoundError if there is nothing there."""
    def read_many(self, relpaths: Sequence[str], missing_ok: bool = False) -> Iterator[bytes]:
        """The bytes of each, in order (an object store fetches them concurrently); with
        missing_ok, empty bytes for one that is gone."""
    def exists(self, relpath: str) -> bool: ...
    def list(self, prefix: str) -> list[Entry]:
        """Everything under `prefix` (a folder, no trailing '/'), sorted by path."""
    def delete(self, relpath: str) -> None:
        """Remove it; no error if it is already gone."""
    def describe(self, relpath: str = "") -> str:
        """Where that is, for people (a path or an s3:// URL)."""


class LocalRoot:
    """A directory: atomic renames for writes, so a killed writer leaves no half file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, relpath: str, data: bytes | Iterable[bytes]) -> None:
        atomic_write(self.path / relpath, data)

    def write_once(self, relpath: str, data: bytes) -> None:
        if not (self.path / relpath).exists():
            atomic_write(self.path / relpath, data)

    def read(self, relpath: str) -> bytes:
        return (self.path / relpath).read_bytes()

    def read_many(self, relpaths: Sequence[str], missing_ok: bool = False) -> Iterator[bytes]:
        return (read_or_empty(self, p) if missing_ok else self.read(p) for p in relpaths)

    def exists(self, relpath: str) -> bool:
        return (self.path / relpath).is_file()

    def list(self, prefix: str) -> list[Entry]:
        base = self.path / prefix
        if not base.is_dir():
            return []
        out = []
        for p in base.rglob("*"):
            if p.name.startswith(".tmp-") or not p.is_file():
                continue  # a write in progress, or a folder
            try:
                with_stat = p.stat()
            except FileNotFoundError:  # deleted since it was listed (a compaction folded it)
                continue
            out.append(Entry(p.relative_to(self.path).as_posix(), with_stat.st_size, with_stat.st_mtime))
        return sorted(out, key=lambda e: e.relpath)

    def delete(self, relpath: str) -> None:
        (self.path / relpath).unlink(missing_ok=True)

    def describe(self, relpath: str = "") -> str:
        return str((self.path / relpath).resolve())


class ArtifactStore:
    """Objects named by the sha256 of their bytes, verified on every read, and JSON records."""

    def __init__(self, root: Root | Path) -> None:
        self.root: Root = LocalRoot(root) if isinstance(root, Path) else root

    @staticmethod
    def key(digest: str) -> str:
        return f"objects/{digest[:2]}/{digest[2:]}"

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        self.root.write_once(self.key(digest), data)  # same bytes, same name: writing twice is a no-op
        return digest

    def get(self, digest: str) -> bytes:
        data = self.root.read(self.key(digest))
        if digest_bytes(data) != digest:
            raise IntegrityError(f"artifact {digest[:12]} was modified in the artifact store "
                                 f"({self.root.describe(self.key(digest))}): its sha256 no longer "
                                 "matches its name; refusing to load it")
        return data

    def exists(self, digest: str) -> bool:
        return self.root.exists(self.key(digest))

    def put_json(self, obj: Any) -> str:
        return self.put(json.dumps(obj, sort_keys=True).encode())

    def get_json(self, digest: str) -> Any:
        return json.loads(self.get(digest))

    def write_record(self, relpath: str, obj: Any) -> None:
        """A JSON copy of an index record beside the artifacts, for `modelfleet reindex`."""
        self.root.write(relpath, json.dumps(obj, sort_keys=True, indent=1).encode())

    def read_record(self, relpath: str) -> Any | None:
        """The JSON record at relpath, None if there is none."""
        try:
            return json.loads(self.root.read(relpath))
        except FileNotFoundError:
            return None

    def records(self, subdir: str) -> dict[str, Any]:
        """relpath -> JSON record, for every *.json under subdir."""
        paths = [e.relpath for e in self.root.list(subdir) if e.relpath.endswith(".json")]
        return {p: json.loads(data) for p, data in zip(paths, self.root.read_many(paths), strict=True)}

    def iter_records(self, subdir: str) -> list[Any]:
        return list(self.records(subdir).values())

    def delete_record(self, relpath: str) -> None:
        self.root.delete(relpath)

    def objects(self) -> list[tuple[str, Entry]]:
        """(digest, entry) of every stored object."""
        return [(e.relpath.removeprefix("objects/").replace("/", ""), e) for e in self.root.list("objects")]

    def delete_object(self, digest: str) -> None:
        self.root.delete(self.key(digest))

    def usage(self) -> tuple[int, int]:
        """(number of objects, total bytes)."""
        entries = self.root.list("objects")
        return len(entries), sum(e.size for e in entries)
