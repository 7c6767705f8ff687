"""The journal stays bounded: segments of a size, folded by compaction into what replay keeps
(issue 19), on a directory and as an object store's segments; and a full disk holds records."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import redis

from producer.local import wait_for
from tests.support.full import fill, small_tmpfs
from workers.cache import StepCache
from workers.compaction import compact, compact_when_due
from workers.journal import FileJournal, Journal, SegmentJournal
from workers.registry import Registry
from workers.store import ArtifactStore, LocalRoot
from workers.tracking import Tracker


def _history(journal: Journal, models: int, tag: str) -> None:
    """What a batch leaves: a dozen state changes, four runs, cache entries (one pruned),
    a version registered then decided, alias snapshots, and a kind replay does not know."""
    for m in range(models):
        name = f"{tag}-{m}"
        for rev in range(1, 13):
            journal.append([{"kind": "state", "batch_id": "b1", "model": name,
                             "state": {"status": "running", "rev": str(rev), "stage": f"s{rev}"}}])
        journal.append([{"kind": "run", "run": {"id": f"{name}-{s}", "batch_id": "b1", "model": name,
                                               "stage": s, "started": 1.0 + s}} for s in range(4)])
        journal.append([{"kind": "cache", "entry": {"key": f"k-{name}", "created": 1.0, "value": {}}},
                        {"kind": "cache", "entry": {"key": f"k-{name}", "created": 2.0, "value": {"v": 2}}},
                        {"kind": "cache", "entry": {"key": f"p-{name}", "created": 1.0, "value": {}}},
                        {"kind": "cache_pruned", "key": f"p-{name}", "created": 1.0}])
        version = {"name": name, "version": 1, "artifact": f"a-{name}"}
        journal.append([{"kind": "version", "record": version},
                        {"kind": "version", "record": {**version, "decision": {"promoted": True},
                                                       "decisions": [{"promoted": True}]}}])
        journal.append([{"kind": "aliases", "name": name, "aliases": {"production": rev},
                         "history": {"production": []}, "rev": rev} for rev in (1, 2)])
        journal.append([{"kind": "note", "text": name}])


def _replayed(root: Path, journal: Journal) -> dict[str, Any]:
    """What reindex rebuilds from the journal: each storage class's own replay."""
    store, client = ArtifactStore(root), redis.Redis(port=1)  # never connected: replay reads files only
    return {"states": Tracker(client, store, journal).journaled_states(),
            "runs": sorted(r["run"]["id"] for r in journal.replay("run")),
            "cache": sorted((e["key"], e["created"]) for e in
                            StepCache(client, store, 1.0, 1.0, journal).journaled_entries()),
            "registry": Registry(client, store, journal).stored_records(),
            "notes": sorted(r["text"] for r in journal.replay("note"))}


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "journal").rglob("*.jsonl"))


def test_file_journal_rotates_and_compaction_keeps_what_replay_keeps(tmp_path: Path) -> None:
    # Given two processes' journals in segments of 8 KiB, one of them still appending
    done, live = FileJournal(tmp_path, segment_bytes=8192), FileJournal(tmp_path, segment_bytes=1 << 30)
    _history(done, 40, "done")
    done._close_segment()  # the process exits
    _history(live, 5, "live")
    files = sorted((tmp_path / "journal").glob("*.jsonl"))
    assert len(files) > 10 and all(f.stat().st_size < 8192 + 4096 for f in files)
    before, size = _replayed(tmp_path, done), _size(tmp_path)

    # When the journal is compacted
    folded = compact(done)

    # Then replay finds the same, in a fraction of the bytes, and the live file is untouched
    assert folded is not None and folded.bytes_after < folded.bytes_before / 2
    assert _replayed(tmp_path, done) == before and _size(tmp_path) < size * 0.6
    assert len(before["states"]) == 45 and len(before["runs"]) == 180
    live_files = [f for f in (tmp_path / "journal").glob("*.jsonl") if not f.name.startswith("compact-")]
    assert len(live_files) == 1
    live.append([{"kind": "note", "text": "after"}])
    assert "after" in _replayed(tmp_path, done)["notes"]
    # Compacting again folds the folded segments with the rest: still the same replay
    _history(done, 3, "more")
    done._close_segment()
    again = _replayed(tmp_path, done)
    assert compact(done) is not None and _replayed(tmp_path, done) == again


def test_segment_journal_compaction_keeps_what_replay_keeps(tmp_path: Path) -> None:
    # The object store's layout (immutable numbered segments per writer), on a directory
    journal = SegmentJournal(LocalRoot(tmp_path), flush_interval=0.0)
    for part in range(4):
        _history(journal, 10, f"p{part}")
        assert journal.flush()
    before, segments = _replayed(tmp_path, journal), len(journal.segments())
    folded = compact(journal)
    assert folded is not None and folded.segments_before == segments
    assert len(journal.segments()) < segments and folded.bytes_after < folded.bytes_before / 2
    assert _replayed(tmp_path, journal) == before


def test_a_full_disk_holds_journal_records_until_there_is_space(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as root:
        journal = FileJournal(root)
        journal.append([{"kind": "note", "text": "first"}])
        filler = fill(root)
        # When the disk is full, appends do not fail and leave no torn line
        for i in range(50):
            journal.append([{"kind": "note", "text": f"held-{i}" + "x" * 200}])
        assert not journal.flush()
        # (what fitted in the file's last page went out; every line there is whole)
        written = [r["text"].rstrip("x") for r in journal.replay("note")]
        assert len(written) < 51 and written == ["first"] + [f"held-{i}" for i in range(len(written) - 1)]
        assert all(line.endswith(b"}") for p in (root / "journal").glob("*.jsonl")
                   for line in p.read_bytes().splitlines())
        # Then once there is space, the held records follow, whole and in order
        filler.unlink()
        assert journal.flush()
        texts = [r["text"].rstrip("x") for r in journal.replay("note")]
        assert texts == ["first"] + [f"held-{i}" for i in range(50)]
        lines = b"".join(p.read_bytes() for p in (root / "journal").glob("*.jsonl")).splitlines()
        assert len(lines) == 51


def test_closed_segments_past_the_size_are_folded_automatically(tmp_path: Path) -> None:
    # Given a worker's journal (wired as Runtime wires it) that closes a segment every 8 KiB,
    # and the same history in a journal nothing compacts
    journal = FileJournal(tmp_path / "w", segment_bytes=8192, compact_bytes=32 << 10)
    journal.on_segment_closed = compact_when_due
    plain = FileJournal(tmp_path / "plain", segment_bytes=8192)
    # When it has written far more than the compaction size
    for part in range(8):
        _history(journal, 10, f"p{part}")
        _history(plain, 10, f"p{part}")

    # Then its closed segments are folded on a thread, and replay finds the same. Replay is
    # read once no compaction thread runs: one caught between writing its output and deleting
    # what it folded shows a run twice (harmless to reindex, which keys runs by id).
    def folded() -> bool:
        return any(p.name.startswith("compact-") for p in (tmp_path / "w" / "journal").glob("*.jsonl"))

    def compacting() -> bool:
        return any(t.name == "journal-compact" and t.is_alive() for t in threading.enumerate())

    wait_for(folded, 30, "a compaction")
    wait_for(lambda: journal.fresh_bytes() < 32 << 10 and not compacting(), 30, "the fresh segments folded")
    replayed = _replayed(tmp_path / "w", journal)
    assert replayed == _replayed(tmp_path / "plain", plain) and len(replayed["runs"]) == 8 * 10 * 4


class _StalledRoot(LocalRoot):
    """A directory whose writes hang until released: an object store that stopped answering."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.released = threading.Event()

    def write(self, relpath: str, data: Any) -> None:
        self.released.wait(30)
        super().write(relpath, data)


def test_an_exit_flush_that_the_store_stalls_is_logged_not_waited_for(tmp_path: Path, caplog: Any) -> None:
    """A worker's exit waits for its journal's upload a bounded time, and says when the
    store did not take it: the records are then in Redis only (workers/task.py)."""
    from workers.task import _flush_at_exit

    root = _StalledRoot(tmp_path)
    journal = SegmentJournal(root, flush_interval=0.0)
    journal.append([{"kind": "state", "batch_id": "b1", "model": "m", "state": {"rev": "1"}}])
    with caplog.at_level("WARNING"):
        _flush_at_exit(timeout=0.3)
    assert "not uploaded within 0.3 s of this process's exit" in caplog.text
    root.released.set()
    assert journal.flush(10)  # the store answers again: the records go out
    assert sum(1 for _ in journal.replay("state")) == 1
    caplog.clear()
    with caplog.at_level("WARNING"):
        _flush_at_exit(timeout=5)
    assert "not uploaded" not in caplog.text
