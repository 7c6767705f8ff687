"""An append-only journal of index records beside the artifacts, for `reindex`.

Redis is the index; this is its durable copy on the artifact root. Records are
replayed in order per writing process; across processes a record carries what
orders it (a state's `rev`, a run's unique id), so replay needs no global order.

- A directory root (`FileJournal`): each process appends to its own file
  (`journal/<host>-<pid>-<random>.jsonl`), one JSON line per record and one
  `write()` per call, so the hot path pays one system call per stage. A killed
  process loses nothing it had appended (the bytes are in the kernel once
  `write` returns); a crash of the machine itself can lose the lines the kernel
  had not written back yet, as any unsynced file can.
- An object store (`SegmentJournal`): objects cannot be appended to, so each
  process writes numbered immutable segments
  (`journal/<host>-<pid>-<random>/<seq>.jsonl`). `append` only buffers (no
  network on the stage's path); a background thread uploads what accumulated,
  at most one segment per `flush_interval` seconds, and `flush()` (at worker
  and process exit) uploads the rest. Loss window: a SIGKILLed process loses
  the records of its last `flush_interval` seconds plus one upload; Redis
  still holds them, so only a crash of Redis and the worker together loses them.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from workers.store import LocalRoot, Root

log = logging.getLogger(__name__)


def _encode(records: Sequence[dict[str, Any] | str]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r, separators=(",", ":"))) + "\n"
                   for r in records).encode()


def _parse(lines: Iterable[str | bytes], kind: str | None) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the writer died mid-line: that record never committed
        if kind is None or record.get("kind") == kind:
            yield record


def _writer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Journal:
    """What the storage classes use: append records, flush, replay them."""

    def append(self, records: Sequence[dict[str, Any] | str]) -> None:
        """Append records (a str is a JSON line already encoded); no-op for none."""
        raise NotImplementedError

    def flush(self, timeout: float = 30.0) -> bool:
        """Make everything appended so far durable on the root; False if that timed out."""
        return True

    def replay(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record (of one kind), writer by writer; a torn last line is skipped."""
        raise NotImplementedError


class FileJournal(Journal):
    def __init__(self, root: Path) -> None:
        self.dir = root / "journal"
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def append(self, records: Sequence[dict[str, Any] | str]) -> None:
        if not records:
            return
        data = _encode(records)
        with self._lock:
            fd = self._file()
            view = memoryview(data)
            while view:  # O_APPEND writes of a regular file are whole; loop for the odd short one
                view = view[os.write(fd, view):]

    def _file(self) -> int:
        # A forked pool child must not share its parent's file: open our own.
        if self._fd is None or self._pid != os.getpid():
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.dir / f"{_writer_name()}.jsonl",
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._pid = os.getpid()
        return self._fd

    def replay(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        if not self.dir.exists():
            return
        for path in sorted(self.dir.glob("*.jsonl")):
            with path.open() as fh:
                yield from _parse(fh, kind)


class SegmentJournal(Journal):
    """Numbered immutable segments per process, uploaded off the stage's path (see the module doc)."""

    def __init__(self, root: Root, flush_interval: float = 1.0) -> None:
        self.root = root
        self.flush_interval = flush_interval
        self._reset()
        # A forked pool child starts empty, with its own name, lock and uploader.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(ref, "_reset"))
        _OPEN.add(self)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[bytes] = []
        self._uploading = False
        self._writer = _writer_name()
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._last_upload = 0.0

    def append(self, records: Sequence[dict[str, Any] | str]) -> None:
        if not records:
            return
        data = _encode(records)
        with self._cond:
            self._pending.append(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._upload_loop, name="journal-upload", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _upload_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
            # Coalesce: whatever arrives during the interval goes into the same segment.
            time.sleep(max(0.0, self._last_upload + self.flush_interval - time.monotonic()))
            self._upload_pending()

    def _upload_pending(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._uploading)
            if not self._pending:
                return
            data, self._pending, self._uploading = b"".join(self._pending), [], True
            seq = self._seq
        try:
            delay = 0.5
            while True:
                try:
                    self.root.write(f"journal/{self._writer}/{seq:012d}.jsonl", data)
                    break
                except Exception as exc:  # the store is down: keep the records, try again
                    log.warning("journal segment %d not written (%s); retrying in %.1fs", seq, exc, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            with self._cond:
                self._seq, self._uploading = seq + 1, False
                self._last_upload = time.monotonic()
                self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        # On a thread, so a store that stays down delays the caller's exit by `timeout` at most.
        deadline = time.monotonic() + timeout
        threading.Thread(target=self._upload_pending, name="journal-flush", daemon=True).start()
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._uploading,
                                       max(0.0, deadline - time.monotonic()))

    def replay(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        # Zero-padded numbers: path order is each writer's append order.
        paths = [e.relpath for e in self.root.list("journal") if e.relpath.endswith(".jsonl")]
        for data in self.root.read_many(paths):
            yield from _parse(data.splitlines(), kind)


# Every segment journal of this process, for flush_all at exit (a worker holds one per task class).
_OPEN: weakref.WeakSet[SegmentJournal] = weakref.WeakSet()


def flush_all(timeout: float = 30.0) -> bool:
    """Upload every journal's buffered records; called at process exit (atexit, Celery's shutdown)."""
    deadline = time.monotonic() + timeout
    return all([j.flush(max(0.0, deadline - time.monotonic())) for j in list(_OPEN)])


atexit.register(flush_all)


def _call(ref: weakref.ref[SegmentJournal], method: str) -> None:
    if (journal := ref()) is not None:
        getattr(journal, method)()


def open_journal(root: Root, flush_interval: float = 1.0) -> Journal:
    """The journal that suits the root: one appended file per process on a directory, segments else
    (one per root and process, shared, so a worker's stages upload together)."""
    if isinstance(root, LocalRoot):
        return FileJournal(root.path)
    key = (root.describe(), flush_interval)
    if (journal := _SHARED.get(key)) is None:
        journal = _SHARED[key] = SegmentJournal(root, flush_interval)
    return journal


_SHARED: dict[tuple[str, float], SegmentJournal] = {}


def encoded(kind: str, field: str, body: str) -> str:
    """A journal line around a record already encoded as JSON (for Redis), so it is encoded once."""
    return f'{{"kind":{json.dumps(kind)},{json.dumps(field)}:{body}}}'
