"""How big the journal grows per model, what compaction leaves, and `reindex` at fleet scale.

1. A real batch (small iris/wine trees, default packing) on real workers into a fresh
   directory root: journal bytes and records per kind per model, before and after
   `compact` (workers/compaction.py), and the time compaction took.
2. That batch's journal copied `--copies` times under new batch ids and run ids (the
   lines themselves, so each model's records are as a real run writes them) with
   their batch records: `reindex` into a fresh Redis from the journal as written, and
   after compacting it.

    .venv/bin/python -m bench.journal_size --models 200 --copies 500   # 100,000 models
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from bench.teardown import close_app
from producer.local import LocalWorkers, RedisServer
from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app
from workers.compaction import compact
from workers.reindex import reindex
from workers.runtime import Runtime
from workers.settings import Settings
from workers.tracking import DEPLOYED

_RUN_ID = re.compile(rb'"id": "([0-9a-f]{32})"')


def journal_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "journal").glob("*.jsonl"))


def kinds(root: Path) -> Counter[str]:
    counted: Counter[str] = Counter()
    for path in (root / "journal").glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            counted[json.loads(line).get("kind", "?")] += 1
    return counted


def real_batch(tmp: Path, models: int, workers: int) -> tuple[Settings, str]:
    spec = {"name": "journal", "models": [
        {"name": f"m{i}", "task": "classification",
         "dataset": {"kind": "sklearn", "name": ("iris", "wine")[i % 2]},
         "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                       "params": {"max_depth": i % 6 + 1, "random_state": i}}} for i in range(models)]}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    with RedisServer(tmp / "redis") as server:
        settings = Settings(broker_url=server.url, artifact_root=tmp / "artifacts",  # type: ignore[arg-type]
                            journal_compact_bytes=0)
        runtime, app = Runtime.from_settings(settings), create_app(settings)
        try:
            with LocalWorkers(settings, workers, tmp / "logs"):
                handle = submit(load_batch(tmp / "spec.yaml", settings), app, runtime)
                status = handle.wait(timeout=1800)
                assert sum(status.counts.get(s, 0) for s in DEPLOYED) == models, status.counts
        finally:
            close_app(app)
    return settings, handle.batch_id


def copy_batch(root: Path, batch_id: str, copies: int) -> None:
    """The batch's journal lines and records again under new batch ids and run ids, one
    file per copy (as if each ran in its own worker process)."""
    lines = b"".join(p.read_bytes() for p in sorted((root / "journal").glob("*.jsonl")))
    record = json.loads((root / "batches" / f"{batch_id}.json").read_text())
    specs = (root / "specs" / f"{batch_id}.json").read_bytes()
    old = batch_id.encode()
    for k in range(1, copies):
        new = f"{batch_id}c{k}"
        suffix = b"%08x" % k
        text = _RUN_ID.sub(lambda m, suffix=suffix: b'"id": "' + m.group(1)[:24] + suffix + b'"', lines)
        (root / "journal" / f"copy-{k:06d}.jsonl").write_bytes(text.replace(old, new.encode()))
        (root / "batches" / f"{new}.json").write_text(json.dumps({**record, "id": new}))
        (root / "specs" / f"{new}.json").write_bytes(specs)


def timed_reindex(settings: Settings, tmp: Path) -> tuple[float, float, dict[str, int]]:
    """(wall s, CPU s of this process, counts) of reindex into a fresh Redis."""
    with RedisServer(tmp) as fresh:
        rebuilt = Runtime.from_settings(settings.with_broker(fresh.url))
        cpu, t0 = time.process_time(), time.perf_counter()
        counts = reindex(rebuilt)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
        rebuilt.redis.close()
    return wall, cpu, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--copies", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None, help="where to work (default: a temp dir)")
    args = parser.parse_args()
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="journal-size-"))
    tmp.mkdir(parents=True, exist_ok=True)
    settings, batch_id = real_batch(tmp, args.models, args.workers)
    root = Path(settings.artifact_root)
    written, per_kind = journal_bytes(root), kinds(root)
    raw = b"".join(p.read_bytes() for p in sorted((root / "journal").glob("*.jsonl")))
    folded = compact(Runtime.from_settings(settings).tracker.journal)
    assert folded is not None
    print(f"one batch of {args.models} models: journal {written:,} bytes "
          f"({written / args.models * 1000 / 1e6:.2f} MB per 1,000 models), records per model "
          + ", ".join(f"{k} {n / args.models:.1f}" for k, n in sorted(per_kind.items())))
    print(f"compacted: {folded.bytes_after:,} bytes ({folded.bytes_after / args.models * 1000 / 1e6:.2f} MB "
          f"per 1,000 models, {folded.bytes_after / written:.0%}) in {folded.seconds:.2f} s; "
          "records per model "
          + ", ".join(f"{k} {n / args.models:.1f}" for k, n in sorted(kinds(root).items())))
    if args.copies <= 1:
        return
    # The fleet: the batch's journal as the workers wrote it (uncompacted), copied.
    for p in (root / "journal").glob("*.jsonl"):
        p.unlink()
    (root / "journal" / "original.jsonl").write_bytes(raw)
    copy_batch(root, batch_id, args.copies)
    n = args.models * args.copies
    size = journal_bytes(root)
    load = os.getloadavg()
    wall, cpu, counts = timed_reindex(settings, tmp / "fresh-1")
    print(f"{n:,} models, journal {size / 1e9:.2f} GB in {args.copies} files: reindex {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU (this process), runs {counts['runs']:,}; load average {load[0]:.1f}")
    journal = Runtime.from_settings(settings).tracker.journal
    t0 = time.perf_counter()
    folded = compact(journal)
    assert folded is not None
    print(f"compaction: {folded.bytes_before / 1e9:.2f} GB -> {folded.bytes_after / 1e9:.2f} GB, "
          f"{folded.segments_before} -> {folded.segments_after} segments, {time.perf_counter() - t0:.1f} s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    wall, cpu, counts = timed_reindex(settings, tmp / "fresh-2")
    print(f"reindex after compaction: {wall:.1f} s wall, {cpu:.1f} s CPU; load average "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
