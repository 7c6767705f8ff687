"""Fold a journal's closed segments into fewer, keeping what replay would keep.

Replay takes, per identity, the record that supersedes the others (a model's
state with the highest `rev`, ...); compaction keeps only that one, so a model's
dozen state changes become one line. Run records are all kept (each is its own
identity): the journal stays proportional to the index, not to its history.
Unknown kinds are kept as they are.

Crash-safe without a rename across segments: the folded segments are written
(each whole, under a new name) before the old ones are deleted, and replay reads
a record twice as harmlessly as once. A segment that vanished while being read
(a concurrent compaction on an object store) stops the compaction, which then
deletes only its own output.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.journal import COMPACTED, Journal
from workers.registry import fullness

log = logging.getLogger(__name__)

# kind -> (its identity, its order: the higher supersedes), as the replaying classes decide.
_RULES: dict[str, tuple[Callable[[dict[str, Any]], Any], Callable[[dict[str, Any]], Any]]] = {
    "state": (lambda r: (r["batch_id"], r["model"]), lambda r: int(r["state"].get("rev", 0))),
    "cache": (lambda r: r["entry"]["key"], lambda r: r["entry"]["created"]),
    "cache_pruned": (lambda r: r["key"], lambda r: r["created"]),
    "version": (lambda r: (r["record"]["name"], r["record"]["version"]), lambda r: fullness(r["record"])),
    "aliases": (lambda r: r["name"], lambda r: r["rev"]),
}


@dataclass(frozen=True)
class Compacted:
    segments_before: int
    bytes_before: int
    segments_after: int
    bytes_after: int
    seconds: float


def compact(journal: Journal, fresh_only: bool = False) -> Compacted | None:
    """Fold the closed segments (with fresh_only, those no compaction wrote); None if another
    compaction holds them or there is nothing to fold."""
    started = time.perf_counter()
    with journal.closed_segments() as closed:
        names = [n for n in closed or [] if not (fresh_only and n.startswith(COMPACTED))]
        if not names or (len(names) == 1 and names[0].startswith(COMPACTED)):
            return None  # nothing, or one folded segment: already as small as it gets
        sizes = {e.relpath: e.size for e in journal.root.list("journal")}
        out = _Output(journal)
        try:
            kept = _fold(journal, names, out)
            for line in kept:
                out.add(line)
            out.close()
        except FileNotFoundError:
            out.discard()
            return None
        for name in names:
            journal.root.delete(name)
    return Compacted(len(names), sum(sizes.get(n, 0) for n in names), len(out.written), out.bytes,
                     time.perf_counter() - started)


def _fold(journal: Journal, names: list[str], out: _Output) -> list[bytes]:
    """Write the runs and unknown kinds through; return the newest line of each other identity."""
    newest: dict[tuple[str, Any], tuple[Any, bytes]] = {}
    runs: set[str] = set()
    for lines in journal.read(names):
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line never committed
            line = line.rstrip(b"\n") + b"\n"
            kind = record.get("kind")
            if kind == "run":  # each run is its own identity; a crashed compaction may repeat one
                run_id = (record.get("run") or {}).get("id")
                if run_id not in runs:
                    out.add(line)
                if run_id is not None:
                    runs.add(run_id)
                continue
            if (rule := _RULES.get(kind)) is None:
                out.add(line)
                continue
            at, order = (kind, rule[0](record)), rule[1](record)
            if at not in newest or order >= newest[at][0]:
                newest[at] = (order, line)
    # A cache entry pruned after it was made stays out; the pruning marker stays in.
    pruned = {key: order for (kind, key), (order, _) in newest.items() if kind == "cache_pruned"}
    return [line for (kind, key), (order, line) in newest.items()
            if not (kind == "cache" and order <= pruned.get(key, -1.0))]


class _Output:
    """The folded records, cut into segments of the journal's segment size."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.name = f"compact-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.limit = int(getattr(journal, "segment_bytes", 16 << 20))
        self.pending: list[bytes] = []
        self.size = 0
        self.bytes = 0
        self.written: list[str] = []

    def add(self, line: bytes) -> None:
        self.pending.append(line)
        self.size += len(line)
        if self.size >= self.limit:
            self._write()

    def close(self) -> None:
        if self.pending:
            self._write()

    def _write(self) -> None:
        name = self.journal.new_segment_name(self.name, len(self.written))
        self.journal.root.write(name, b"".join(self.pending))
        self.written.append(name)
        self.bytes += self.size
        self.pending, self.size = [], 0

    def discard(self) -> None:
        for name in self.written:
            self.journal.root.delete(name)


def compact_when_due(journal: Journal) -> None:
    """Fold the segments no compaction wrote once they hold the journal's `compact_bytes`
    (a worker's thread calls this when it closes a segment)."""
    try:
        # Again while due: a segment closed during this compaction found it running and left
        # its own to this thread (measured: 1 run in 30 of test_journal's left them unfolded).
        while journal.fresh_bytes() >= journal.compact_bytes:
            if compact(journal, fresh_only=True) is None:
                return  # another compaction runs (it checks again when done), or nothing to fold
    except Exception as exc:  # the segments stay as they were: nothing is lost, only not folded
        log.warning("journal compaction failed: %s", exc)
