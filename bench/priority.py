"""How soon an urgent batch starts behind a big low-priority one, and whether a cap holds.

    python -m bench.priority --bulk 1000 --workers 2
    python -m bench.priority --bulk 200 --workers 3 --cap 2

Starts its own redis-server and `celery worker` processes in a temp dir, submits a
`priority: low` batch of --bulk small models (`pack: 1`: one chain each, the longest
queue), waits for its first stage, then submits a `priority: high` batch of 3 models
(with --cap, the bulk batch gets `max_parallel: CAP` instead). Every figure comes from
the run records. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.teardown import close_app
from producer.local import LocalWorkers, RedisServer, wait_for
from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app, queue_lists
from workers.runtime import Runtime
from workers.settings import Settings
from workers.tracking import DEPLOYED


def _model(name: str, seed: int) -> dict[str, Any]:
    return {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
            "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier",
                          "params": {"random_state": seed}}}


def max_overlap(runs: list[dict[str, Any]]) -> int:
    """The most runs in progress at one instant (an end at t comes before a start at t)."""
    edges = sorted([(r["started"], 1) for r in runs] + [(r["finished"], -1) for r in runs])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bulk", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cap", type=int, default=None, help="max_parallel of the bulk batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as server:
        settings = Settings(broker_url=server.url, artifact_root=Path(tmp) / "artifacts")  # type: ignore[arg-type]
        with LocalWorkers(settings, args.workers, Path(tmp) / "logs"):
            app, runtime = create_app(settings), Runtime.from_settings(settings)
            try:
                print(json.dumps(_measure(app, runtime, settings, Path(tmp), args)))
            finally:
                close_app(app)


def _submit(app: Any, runtime: Runtime, settings: Settings, tmp: Path, spec: dict[str, Any]) -> Any:
    path = tmp / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return submit(load_batch(path, settings), app, runtime)


def _measure(app: Any, runtime: Runtime, settings: Settings, tmp: Path, args: Any) -> dict[str, Any]:
    bulk_spec: dict[str, Any] = {"name": "bulk", "priority": "low", "pack": 1,
                                 "models": [_model(f"bulk-{i}", i) for i in range(args.bulk)]}
    if args.cap:
        bulk_spec["max_parallel"] = args.cap
    started = time.time()
    bulk = _submit(app, runtime, settings, tmp, bulk_spec)
    submit_s = time.time() - started
    wait_for(lambda: runtime.tracker.runs(bulk.batch_id), 120, "the bulk batch's first stage")
    out: dict[str, Any] = {"bulk_models": args.bulk, "workers": args.workers,
                           "bulk_submit_s": round(submit_s, 2)}
    if not args.cap:
        queued = sum(runtime.redis.llen(q) for q in queue_lists("preprocess"))
        sent = time.time()
        urgent_spec = {"name": "urgent", "priority": "high",
                       "models": [_model(f"urgent-{i}", i) for i in range(3)]}
        urgent = _submit(app, runtime, settings, tmp, urgent_spec)
        status = urgent.wait(timeout=600)
        urgent_runs = runtime.tracker.runs(urgent.batch_id)
        left = sum(1 for row in bulk.status().rows if row.status not in DEPLOYED)
        out.update(queued_bulk_chains=queued, urgent=dict(status.counts),
                   urgent_first_stage_s=round(min(r["started"] for r in urgent_runs) - sent, 3),
                   urgent_done_s=round(max(r["finished"] for r in urgent_runs) - sent, 3),
                   bulk_models_not_deployed_when_urgent_done=left)
    bulk_status = bulk.wait(timeout=3600)
    runs = runtime.tracker.runs(bulk.batch_id)
    out.update(bulk=dict(bulk_status.counts), bulk_s=round(max(r["finished"] for r in runs) - started, 1),
               bulk_max_overlap=max_overlap(runs))
    return out


if __name__ == "__main__":
    main()
