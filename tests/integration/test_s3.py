"""The artifact root in an S3 bucket, for real: moto's S3 server on a loopback port, real
workers storing objects, run records, specs, journal segments and registry records in it."""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.s3_server import S3Server, s3_server
from producer.local import RedisServer, wait_for
from producer.serving import load_deployed
from tests.support.cluster import FAULTY, Cluster, classifier, cluster, wait_lines
from tests.support.index import index_snapshot
from workers.compaction import compact
from workers.journal import FileJournal, SegmentJournal
from workers.reindex import reindex
from workers.runtime import Runtime, open_root
from workers.s3 import split_url
from workers.settings import Settings
from workers.store import ArtifactStore, IntegrityError, LocalRoot

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


def _rebuilt_in_fresh_redis(c: Cluster, tmp: Path) -> tuple[dict[str, object], dict[str, int], float]:
    """Reindex from the bucket alone into a Redis that knows nothing: (snapshot, counts, seconds)."""
    with RedisServer(tmp / "fresh-redis") as fresh:
        rebuilt = Runtime.from_settings(c.settings.with_broker(fresh.url))
        assert rebuilt.tracker.list_batches() == []
        t0 = time.perf_counter()
        counts = reindex(rebuilt)
        seconds = time.perf_counter() - t0
        snapshot = index_snapshot(rebuilt)
        rebuilt.redis.close()
    return snapshot, counts, seconds


def _log_tails(logs: Path, lines: int = 15) -> dict[str, list[str]]:
    return {log.name: log.read_text(errors="replace").splitlines()[-lines:]
            for log in sorted(logs.glob("*.log"))}


@pytest.mark.slow
def test_batch_on_s3_end_to_end_then_reindex_from_the_bucket(tmp_path: Path, s3: S3Server) -> None:
    fields = s3.new_bucket_settings()
    bucket, prefix = split_url(fields["artifact_root"])
    spec = {"name": "s3batch", "pack": 1, "models": [
        classifier(f"s3-tree-{i}", max_depth=i + 1) for i in range(3)] + [
        classifier("s3-logit", "sklearn.linear_model.LogisticRegression", max_iter=300)]}
    with cluster(tmp_path, **fields) as c:
        t0 = time.perf_counter()
        handle = c.submit(spec)
        status = handle.wait(timeout=120)
        print(f"\n4 models on 2 workers with an s3:// root: {time.perf_counter() - t0:.1f}s")
        assert status.counts == {"promoted": 4}
        c.runtime.registry.promote("s3-tree-1", 1, "staging")

        # Everything went to the bucket, nothing to a local artifact directory.
        assert not (tmp_path / "artifacts").exists()
        stored = s3.keys(bucket, prefix + "/")
        assert f"{prefix}/batches/{handle.batch_id}.json" in stored
        assert f"{prefix}/specs/{handle.batch_id}.json" in stored
        # 4 fitted models, 4 reports, the split they share (and its transform)
        assert sum(k.startswith(f"{prefix}/objects/") for k in stored) >= 9
        # A deployed model loads back from the bucket (every object's digest checked) and predicts.
        from sklearn.datasets import load_iris

        X, y = load_iris(return_X_y=True)
        model = load_deployed("s3-tree-2@production", c.runtime)
        assert (model.predict(X) == y).mean() > 0.9

        # Workers stopped cleanly upload the rest of their journals; so does this process.
        c.workers.stop()
        assert c.runtime.tracker.journal.flush()
        segments = [k for k in s3.keys(bucket, f"{prefix}/journal/") if k.endswith(".jsonl")]
        assert segments and all(k.count("/") == 3 for k in segments)  # prefix/journal/<writer>/<seq>
        original = index_snapshot(c.runtime)
        assert len(original["runs"]) == 16 and original["registry"]["s3-tree-1"]["aliases"]

        rebuilt, counts, seconds = _rebuilt_in_fresh_redis(c, tmp_path)
        print(f"reindex from the bucket: {counts['runs']} runs, {len(segments)} journal segments, "
              f"{len(stored)} objects in {seconds:.2f}s")
        # Seen once in CI (2026-12-07, 4 segments, 3 runs): a pool child's last segment was
        # missing. The workers' logs say whether an upload stalled (see the session notes).
        assert counts["batches"] == 1 and counts["runs"] == 16, \
            (counts, segments, _log_tails(tmp_path / "logs"))
        assert rebuilt == original

        # The bucket's segments fold into one (`reindex --compact`), which rebuilds the same index
        folded = compact(c.runtime.tracker.journal)
        assert folded is not None and folded.segments_before == len(segments) and folded.segments_after == 1
        assert [k for k in s3.keys(bucket, f"{prefix}/journal/") if k.endswith(".jsonl")] == [
            f"{prefix}/{folded_name}" for folded_name in c.runtime.tracker.journal.segments()]
        assert _rebuilt_in_fresh_redis(c, tmp_path / "after-compaction")[0] == original


def test_tampered_object_in_the_bucket_is_refused(s3: S3Server) -> None:
    fields = s3.new_bucket_settings()
    bucket, prefix = split_url(fields["artifact_root"])
    store = ArtifactStore(open_root(Settings(**fields)))
    digest = store.put(b"model bytes")
    assert store.put(b"model bytes") == digest and store.get(digest) == b"model bytes"
    assert store.exists(digest) and not store.exists("0" * 64)
    # Given the object replaced in the bucket by other bytes (a later PUT wins in S3)
    key = f"{prefix}/{store.key(digest)}"
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"tampered")
    # Then reading it fails on the digest check, naming the object
    with pytest.raises(IntegrityError, match=f"modified in the artifact store \\(s3://{bucket}/{key}\\)"):
        store.get(digest)
    # And a second put of the genuine bytes does not silently overwrite the evidence.
    store.put(b"model bytes")
    with pytest.raises(IntegrityError):
        store.get(digest)


@pytest.mark.slow
def test_sigkilled_worker_mid_stage_on_s3_loses_no_model_and_deploys_each_once(
        tmp_path: Path, s3: S3Server) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    spec = {"name": "s3killed", "pack": 1, "models": [
        classifier("gate", FAULTY, started=str(started), wait_for=str(release)),
        *(classifier(f"m{i}", max_depth=i + 1) for i in range(3))]}
    with cluster(tmp_path, **s3.new_bucket_settings()) as c:
        handle = c.submit(spec)
        # Given the gate model is training on one worker, its journal in the bucket up to that fit
        _, ppid, at = wait_lines(started, 1)[0]
        reader = Runtime.from_settings(c.settings).tracker

        def gate_training_journaled() -> bool:
            state = reader.journaled_states().get((handle.batch_id, "gate"), {})
            return state.get("stage") == "train" and state.get("status") == "running"

        wait_for(gate_training_journaled, 30, "the gate's running state in the bucket's journal")
        print(f"\njournal record in the bucket {time.time() - float(at):.2f}s after the stage began "
              f"(journal_flush_interval={c.settings.journal_flush_interval}s)")
        # When that worker's whole process tree is SIGKILLed mid-stage
        victim = next(p for p in c.workers.procs if p.pid == int(ppid))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        release.touch()
        status = handle.wait(timeout=120)

        # Then the other worker redoes the stage and every model is deployed once
        assert status.counts == {"promoted": 4}
        assert int(wait_lines(started, 2)[1][1]) != victim.pid
        runs = c.runtime.tracker.runs(batch_id=handle.batch_id)
        for model in ("gate", "m0", "m1", "m2"):
            assert [v["version"] for v in c.runtime.registry.versions(model)] == [1]
            trains = [r for r in runs if r["model"] == model and r["stage"] == "train"]
            assert [(r["status"], r["cache_hit"]) for r in trains] == [("succeeded", False)]
        # And the bucket alone rebuilds the same index (the survivor stopped cleanly).
        c.workers.stop()
        original = index_snapshot(c.runtime)
        rebuilt, _, _ = _rebuilt_in_fresh_redis(c, tmp_path)
        assert rebuilt == original


def test_object_store_journal_keeps_the_stage_path_cheap(tmp_path: Path, s3: S3Server) -> None:
    """A stage's storage work on each root: its artifact PUT, its journal append."""
    settings = Settings(**s3.new_bucket_settings())
    s3_root, local_root = open_root(settings), LocalRoot(tmp_path / "local")
    record = {"kind": "run", "run": {"id": "x" * 32, "model": "m", "stage": "train", "metrics": {"a": 1.0},
                                     "tags": {"team": "demo"}, "outputs": ["d" * 64]}}

    def timed(fn: object, n: int) -> float:
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)  # type: ignore[operator]
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1000

    figures = {}
    for name, root in (("local", local_root), ("s3", s3_root)):
        store = ArtifactStore(root)
        journal = FileJournal(tmp_path / "local") if name == "local" else SegmentJournal(root, 0.2)
        figures[name] = {
            "put 20 KB": timed(lambda i, s=store: s.put(os.urandom(20_000)), 30),
            "journal append": timed(lambda i, j=journal: j.append([record, record]), 300),
        }
        t0 = time.perf_counter()
        assert journal.flush()
        figures[name]["flush"] = (time.perf_counter() - t0) * 1000
        assert sum(1 for r in journal.replay("run")) == 600
    print("\nmedian ms per call:", figures)
    # The object store's journal append does no network round trip: far below one PUT.
    assert figures["s3"]["journal append"] < figures["s3"]["put 20 KB"] / 5
    # Coalesced: 300 appends became a handful of segments, not 300 objects.
    assert len([e for e in s3_root.list("journal")]) < 30
