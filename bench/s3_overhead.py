"""What an s3:// artifact root costs against a directory: the same batch on each (fresh
Redis, workers and root per run, so no cache hits), the stages' durations from their run
records, and `reindex` from each root into a fresh Redis. The S3 server is moto's on a
loopback port (a local server: no network latency; a real bucket adds its round trips).

    .venv/bin/python -m bench.s3_overhead --models 24 --workers 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.s3_server import s3_server
from bench.teardown import close_app
from producer.local import LocalWorkers, RedisServer
from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app
from workers.reindex import reindex
from workers.runtime import Runtime
from workers.settings import Settings
from workers.tracking import DEPLOYED


def one_run(tmp: Path, models: int, workers: int, fields: dict[str, Any]) -> dict[str, Any]:
    spec = {"name": "overhead", "pack": 1, "models": [
        {"name": f"m{i}", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
         "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                       "params": {"max_depth": i % 6 + 1, "random_state": i}}} for i in range(models)]}
    tmp.mkdir(parents=True)
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    with RedisServer(tmp / "redis") as server:
        settings = Settings(**{"broker_url": server.url, "artifact_root": tmp / "artifacts", **fields})
        runtime = Runtime.from_settings(settings)
        app = create_app(settings)
        try:
            with LocalWorkers(settings, workers, tmp / "logs") as pool:
                t0 = time.perf_counter()
                status = submit(load_batch(tmp / "spec.yaml", settings), app, runtime).wait(timeout=600)
                wall = time.perf_counter() - t0
                assert sum(status.counts.get(s, 0) for s in DEPLOYED) == models, status.counts
                runs = runtime.tracker.runs(limit=10**6)
                pool.stop()  # journals uploaded at exit
        finally:
            close_app(app)
        runtime.tracker.journal.flush()
        with RedisServer(tmp / "fresh") as fresh:
            rebuilt = Runtime.from_settings(settings.with_broker(fresh.url))
            t1 = time.perf_counter()
            counts = reindex(rebuilt)
            reindexed = time.perf_counter() - t1
            rebuilt.redis.close()
    stages = {s: statistics.median(r["duration"] for r in runs if r["stage"] == s) * 1000
              for s in ("preprocess", "train", "evaluate", "deploy")}
    return {"wall_s": round(wall, 2), "stage_median_ms": {k: round(v, 1) for k, v in stages.items()},
            "reindex_s": round(reindexed, 2), "runs": counts["runs"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3-overhead-") as tmp_dir:
        tmp = Path(tmp_dir)
        with s3_server(tmp / "s3-server") as s3:
            for name, fields in (("directory", {}), ("s3", s3.new_bucket_settings())):
                print(name, one_run(tmp / name, args.models, args.workers, fields), flush=True)


if __name__ == "__main__":
    main()
