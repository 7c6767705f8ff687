"""Loaded models kept on this machine between processes: a signed pickle per loaded model.

A skops load of a 200-tree ensemble costs ~0.18 s (issue 18, target 4), and each `predict`
is a new process, so the in-memory cache (workers/modelcache.py) starts empty every time.
This cache keeps what a skops load of verified, allow-listed files produced, as a pickle
signed with HMAC-SHA256 under a key only this OS user can read (a 0600 file in a 0700
directory it owns, else the cache is off). A file whose tag does not verify is deleted and
never unpickled, so the store's model files stay the only thing shared between machines and
users, and they are never pickles. Writing here takes the key: whoever can, can already run
code as this user.

The key of an entry is the model's and transform's file digests, the allow-list and the
versions of Python and the libraries that made the objects: an upgrade starts afresh.
Bounded by size (each process measures the directory again after writing a sixteenth of it,
so it may be over by that much a writer), least recently used (file mtime) out first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import importlib.metadata
import logging
import os
import pickle
import secrets
import stat
import sys
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from workers.store import atomic_write

log = logging.getLogger(__name__)

_TAG = 32  # bytes of HMAC-SHA256 in front of each pickle
_SUFFIX = ".pkl"


@functools.cache
def _versions() -> str:
    """Python and the libraries whose objects a loaded model holds: a pickle is only read back by the same."""
    found = []
    for name in ("numpy", "scipy", "scikit-learn", "skops", "pandas"):
        try:
            found.append(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            found.append("-")
    return "|".join([sys.version, *found])


class LoadCache:
    """`get(key, load)`: the model under `key` from this machine's signed copy, else `load()` stored."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._key: bytes | None = None
        self._off = max_bytes <= 0
        # Bytes this process wrote since it last measured the directory: it measures again
        # past a sixteenth of the size (each write scanning thousands of entries would not do),
        # and at its first write.
        self._unmeasured = max_bytes

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        secret = self._secret()
        if secret is None:
            return load()
        path = self.entry(key)
        model = self._read(path, secret)
        if model is not None:
            return model
        model = load()
        self._write(path, secret, model)
        return model

    def put(self, key: Hashable, model: Any) -> None:
        """Keep `model` under `key` unless an entry is there (a worker, as it trains a big model)."""
        secret = self._secret()
        path = self.entry(key)
        if secret is not None and not path.exists():
            self._write(path, secret, model)

    def entry(self, key: Hashable) -> Path:
        """The file that holds `key`'s model for these library versions."""
        return self.root / (hashlib.sha256(f"{key!r}|{_versions()}".encode()).hexdigest() + _SUFFIX)

    def _secret(self) -> bytes | None:
        """The user's key, created on first use; None (cache off) if it is not private to this user."""
        if self._off or self._key is not None:
            return self._key
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            _check_private(self.root, stat.S_IFDIR)
            key_path = self.root / ".key"
            if not key_path.exists():
                _create_key(key_path)
            _check_private(key_path, stat.S_IFREG)
            key = key_path.read_bytes()
            if len(key) != 32:
                raise PermissionError(f"{key_path}: not a 32-byte key")
            self._key = key
        except OSError as exc:
            log.warning("model load cache off: %s", exc)
            self._off = True
        return self._key

    def _read(self, path: Path, secret: bytes) -> Any:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        tag, body = data[:_TAG], data[_TAG:]
        if not hmac.compare_digest(tag, hmac.new(secret, body, hashlib.sha256).digest()):
            log.warning("model load cache: %s does not verify; deleted, not loaded", path.name)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return pickle.loads(body)  # noqa: S301 - signed by this user's private key (module doc)

    def _write(self, path: Path, secret: bytes, model: Any) -> None:
        try:
            body = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an object that does not pickle is only not cached
            log.info("model load cache: not kept (%s)", exc)
            return
        if len(body) > self.max_bytes:
            return
        try:
            # A 0600 temp file renamed into place: a concurrent reader sees a whole entry or none.
            atomic_write(path, [hmac.new(secret, body, hashlib.sha256).digest(), body])
        except OSError as exc:
            log.info("model load cache: not kept (%s)", exc)
            return
        self._unmeasured += len(body)
        if self._unmeasured > self.max_bytes // 16:
            self._prune()
            self._unmeasured = 0

    def _prune(self) -> None:
        """Delete the least recently used entries until the cache fits its size."""
        entries = []
        for entry in os.scandir(self.root):
            if entry.name.endswith(_SUFFIX):
                with contextlib.suppress(OSError):
                    info = entry.stat()
                    entries.append((info.st_mtime, info.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, name in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                os.unlink(name)
                total -= size


def _create_key(key_path: Path) -> None:
    """A new random key, appearing whole (a link of a written file): a concurrent first use
    reads either no key or this one, never a half-written one."""
    tmp = key_path.with_name(f".key.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, key_path)
    finally:
        tmp.unlink()


def _check_private(path: Path, kind: int) -> None:
    info = os.lstat(path)
    if stat.S_IFMT(info.st_mode) != kind or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path}: must be this user's own and private (mode 0700 / 0600)")


_CACHES: dict[tuple[Path, int], LoadCache] = {}


def load_cache(root: Path | None, max_mb: int) -> LoadCache | None:
    """The process's cache for these settings (None: off)."""
    if root is None or max_mb <= 0:
        return None
    key = (Path(root).resolve(), max_mb)
    if key not in _CACHES:
        _CACHES[key] = LoadCache(key[0], max_mb << 20)
    return _CACHES[key]
