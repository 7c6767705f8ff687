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

Bounded: a process's file is a segment, closed and replaced by a new one once it
holds `segment_bytes`; closed segments (and an object store's segments) are
folded by workers/compaction.py into fewer, keeping only what replay would keep
(the newest state per model, ...), by `modelfleet reindex --compact` and
automatically once `compact_bytes` of new closed segments have accumulated.

A full disk does not fail the step that appends: the records stay in memory (the
file cut back to its last whole line) and go out with the next append or flush,
as the object store's records wait for their upload.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from workers.store import NO_SPACE, LocalRoot, Root, RootFull

log = logging.getLogger(__name__)


def _encode(records: Sequence[dict[str, Any] | str]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r, separators=(",", ":"))) + "\n"
                   for r in records).encode()


def _parse(lines: Iterable[bytes], kind: str | None) -> Iterator[dict[str, Any]]:
    # Every writer puts the kind first (`_encode`'s dicts, `encoded`): a line that starts
    # with another kind is skipped unparsed (a replay of runs skips the states' lines).
    head = b'{"kind":'
    want = None if kind is None else head + json.dumps(kind).encode() + b","
    for line in lines:
        if want is not None and line.startswith(head) and not line.startswith(want):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the writer died mid-line: that record never committed
        if kind is None or record.get("kind") == kind:
            yield record


def _writer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# Defaults for a segment's size, and for how much newly closed segments make a compaction.
SEGMENT_BYTES = 16 << 20
COMPACT_BYTES = 64 << 20
# Records a full disk may keep in memory per process before the append fails instead.
_HELD_MAX = 64 << 20


class Journal:
    """What the storage classes use: append records, flush, replay them."""

    root: Root
    compact_bytes = COMPACT_BYTES
    # Called (on a thread) when a segment is closed: compaction, where the runtime wires it.
    on_segment_closed: Callable[[Journal], None] | None = None

    def append(self, records: Sequence[dict[str, Any] | str]) -> None:
        """Append records (a str is a JSON line already encoded); no-op for none."""
        raise NotImplementedError

    def flush(self, timeout: float = 30.0) -> bool:
        """Make everything appended so far durable on the root; False if that timed out."""
        return True

    def replay(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record (of one kind), writer by writer; a torn last line is skipped.

        A segment a compaction folds meanwhile is gone when its turn comes; the folded
        one was written before, so listing again until nothing is new reads it.
        """
        seen: set[str] = set()
        while names := [n for n in self.segments() if n not in seen]:
            seen.update(names)
            for lines in self.read(names, missing_ok=True):
                yield from _parse(lines, kind)

    def read(self, names: Sequence[str], missing_ok: bool = False) -> Iterator[Iterable[bytes]]:
        """Each segment's lines (nothing for one that is gone, with missing_ok)."""
        for data in self.root.read_many(names, missing_ok=missing_ok):
            yield data.splitlines()

    def fresh_bytes(self) -> int:
        """The size of the segments no compaction wrote."""
        return sum(e.size for e in self.root.list("journal")
                   if e.relpath.endswith(".jsonl") and not e.relpath.startswith(COMPACTED))

    def segments(self) -> list[str]:
        """Every segment's path under the root, in writer order."""
        return [e.relpath for e in self.root.list("journal") if e.relpath.endswith(".jsonl")]

    @contextlib.contextmanager
    def closed_segments(self) -> Iterator[list[str] | None]:
        """The segments no process appends to any more, kept so while the body runs (it may
        fold and delete them); None if another compaction runs."""
        yield self.segments()  # an object store's segments are immutable once written

    def new_segment_name(self, name: str, seq: int) -> str:
        """Where a compaction writes its output's `seq`th segment."""
        return f"journal/{name}/{seq:012d}.jsonl"

    def _maybe_compact(self) -> None:
        """On a thread, whatever folds closed segments (Runtime sets workers/compaction.py's)."""
        if self.on_segment_closed is not None and self.compact_bytes:
            threading.Thread(target=self.on_segment_closed, args=(self,), name="journal-compact",
                             daemon=True).start()


# Where a compaction's segments are named from (journal/compact-<time>-<random>...).
COMPACTED = "journal/compact-"


class FileJournal(Journal):
    """One file per process and segment, locked (flock, shared) while the process appends to it."""

    def __init__(self, root: Path, segment_bytes: int = SEGMENT_BYTES,
                 compact_bytes: int = COMPACT_BYTES) -> None:
        self.root = LocalRoot(root)
        self.dir = root / "journal"
        self.segment_bytes, self.compact_bytes = segment_bytes, compact_bytes
        self._fd: int | None = None
        self._pid = 0
        self._size = 0
        self._held: list[bytes] = []  # records a full disk refused, oldest first
        self._lock = threading.Lock()
        _OPEN.add(self)

    def append(self, records: Sequence[dict[str, Any] | str]) -> None:
        if not records:
            return
        with self._lock:
            self._held.append(_encode(records))
            self._write_held()

    def _write_held(self) -> None:
        data = b"".join(self._held)
        try:
            fd = self._file()
            start = self._size
            try:
                view = memoryview(data)
                while view:  # O_APPEND writes of a regular file are whole; loop for the odd short one
                    view = view[os.write(fd, view):]
            except OSError:
                os.ftruncate(fd, start)  # no torn line: the next records must start a line of their own
                raise
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            self._held = [data]
            if len(data) > _HELD_MAX:
                raise RootFull(exc.errno, f"no space left for the journal in {self.dir}") from exc
            log.warning("no space left for the journal in %s; %d bytes of records wait in memory",
                        self.dir, len(data))
            return
        self._held, self._size = [], self._size + len(data)
        if self._size >= self.segment_bytes:
            self._close_segment()

    def flush(self, timeout: float = 30.0) -> bool:
        with self._lock:
            if self._held:
                self._write_held()
            return not self._held

    def _file(self) -> int:
        # A forked pool child must not share its parent's file: open our own.
        if self._fd is None or self._pid != os.getpid():
            if self._fd is not None:  # the parent's, inherited: its lock stays the parent's
                os.close(self._fd)
            self.dir.mkdir(parents=True, exist_ok=True)
            # Locked before it has its name, so a compaction never takes a segment in use.
            tmp = self.dir / f".tmp-{_writer_name()}.jsonl"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.rename(tmp, self.dir / tmp.name.removeprefix(".tmp-"))
            self._fd, self._pid, self._size = fd, os.getpid(), 0
        return self._fd

    def _close_segment(self) -> None:
        assert self._fd is not None
        os.close(self._fd)  # drops the lock: the segment is closed for good
        self._fd = None
        self._maybe_compact()

    def read(self, names: Sequence[str], missing_ok: bool = False) -> Iterator[Iterable[bytes]]:
        for name in names:  # line by line: a file from before segments had a size may be large
            try:
                fh = (self.dir.parent / name).open("rb")
            except FileNotFoundError:
                if not missing_ok:
                    raise
                continue
            with fh:
                yield fh

    def segments(self) -> list[str]:
        if not self.dir.exists():
            return []
        return [f"journal/{p.name}" for p in sorted(self.dir.glob("*.jsonl")) if not p.name.startswith(".")]

    @contextlib.contextmanager
    def closed_segments(self) -> Iterator[list[str] | None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        guard = os.open(self.dir / ".compact.lock", os.O_RDWR | os.O_CREAT, 0o644)
        held: list[int] = []
        try:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            closed = []
            for name in self.segments():
                try:
                    fd = os.open(self.dir.parent / name, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
                except BlockingIOError:
                    os.close(fd)
                    continue
                held.append(fd)
                closed.append(name)
            yield closed
        finally:
            for fd in held:
                os.close(fd)
            os.close(guard)

    def new_segment_name(self, name: str, seq: int) -> str:
        return f"journal/{name}-{seq:06d}.jsonl"


class SegmentJournal(Journal):
    """Numbered immutable segments per process, uploaded off the stage's path (see the module doc)."""

    def __init__(self, root: Root, flush_interval: float = 1.0, segment_bytes: int = SEGMENT_BYTES,
                 compact_bytes: int = COMPACT_BYTES) -> None:
        self.root = root
        self.flush_interval = flush_interval
        self.segment_bytes, self.compact_bytes = segment_bytes, compact_bytes
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
        self._since_check = 0  # bytes uploaded since the last look at the journal's size

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
                self._since_check += len(data)
                check, self._since_check = self._since_check >= self.segment_bytes, \
                    self._since_check % self.segment_bytes
                self._cond.notify_all()
        if check:  # every segment_bytes uploaded, one listing: not one per upload
            self._maybe_compact()

    def flush(self, timeout: float = 30.0) -> bool:
        # On a thread, so a store that stays down delays the caller's exit by `timeout` at most.
        deadline = time.monotonic() + timeout
        threading.Thread(target=self._upload_pending, name="journal-flush", daemon=True).start()
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._uploading,
                                       max(0.0, deadline - time.monotonic()))



# Every segment journal of this process, for flush_all at exit (a worker holds one per task class).
_OPEN: weakref.WeakSet[Journal] = weakref.WeakSet()


def flush_all(timeout: float = 30.0) -> bool:
    """Upload every journal's buffered records; called at process exit (atexit, Celery's shutdown)."""
    deadline = time.monotonic() + timeout
    return all([j.flush(max(0.0, deadline - time.monotonic())) for j in list(_OPEN)])


atexit.register(flush_all)


def _call(ref: weakref.ref[SegmentJournal], method: str) -> None:
    if (journal := ref()) is not None:
        getattr(journal, method)()


def open_journal(root: Root, flush_interval: float = 1.0, segment_bytes: int = SEGMENT_BYTES,
                 compact_bytes: int = COMPACT_BYTES) -> Journal:
    """The journal that suits the root: one appended file per process on a directory, segments else
    (one per root and process, shared, so a worker's stages upload together)."""
    if isinstance(root, LocalRoot):
        return FileJournal(root.path, segment_bytes, compact_bytes)
    key = (root.describe(), flush_interval, segment_bytes, compact_bytes)
    if (journal := _SHARED.get(key)) is None:
        journal = _SHARED[key] = SegmentJournal(root, flush_interval, segment_bytes, compact_bytes)
    return journal


_SHARED: dict[tuple[str, float, int, int], SegmentJournal] = {}


def encoded(kind: str, field: str, body: str) -> str:
    """A journal line around a record already encoded as JSON (for Redis), so it is encoded once."""
    return f'{{"kind":{json.dumps(kind)},{json.dumps(field)}:{body}}}'
