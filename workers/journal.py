"""An append-only journal of index records beside the artifacts, for `reindex`.

Redis is the index; this is its durable copy on the artifact root. Each
process appends to its own file (`journal/<host>-<pid>-<random>.jsonl`), one
JSON line per record and one `write()` per call, so the hot path pays one
system call per stage instead of several atomic file replacements under a
lock. A killed process loses nothing it had appended (the bytes are in the
kernel once `write` returns); a crash of the machine itself can lose the
lines the kernel had not written back yet, as any unsynced file can.

Records are replayed in file order per process; across processes a record
carries what orders it (a state's `rev`, a run's unique id).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, root: Path) -> None:
        self.dir = root / "journal"
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def append(self, records: Sequence[dict[str, Any] | str]) -> None:
        """Append records as JSON lines in one write (no-op for none); a str is a line already encoded."""
        if not records:
            return
        data = "".join((r if isinstance(r, str) else json.dumps(r, separators=(",", ":"))) + "\n"
                       for r in records).encode()
        with self._lock:
            fd = self._file()
            view = memoryview(data)
            while view:  # O_APPEND writes of a regular file are whole; loop for the odd short one
                view = view[os.write(fd, view):]

    def _file(self) -> int:
        # A forked pool child must not share its parent's file: open our own.
        if self._fd is None or self._pid != os.getpid():
            self.dir.mkdir(parents=True, exist_ok=True)
            name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._pid = os.getpid()
        return self._fd

    def replay(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record (of one kind), file by file; a torn last line is skipped."""
        if not self.dir.exists():
            return
        for path in sorted(self.dir.glob("*.jsonl")):
            with path.open() as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # the writer died mid-line: that record never committed
                    if kind is None or record.get("kind") == kind:
                        yield record


def encoded(kind: str, field: str, body: str) -> str:
    """A journal line around a record already encoded as JSON (for Redis), so it is encoded once."""
    return f'{{"kind":{json.dumps(kind)},{json.dumps(field)}:{body}}}'
