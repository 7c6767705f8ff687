"""Time and memory of the producer: validate (load_batch) and submit n models.

Run in a fresh subprocess per size, so `ru_maxrss` is that size's own peak:
    python -m bench.producer_scale --models 10000 --broker redis://127.0.0.1:PORT/0 --workdir DIR
Prints one JSON line. No workers consume: the messages stay queued and are counted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import Settings


def spec(n: int, form: str) -> dict[str, Any]:
    """n distinct models, as an explicit list (the worst case for parsing) or as a matrix."""
    defaults = {"task": "classification", "evaluation": {"metrics": ["accuracy"]},
                "estimator": {"class_path": "sklearn.linear_model.LogisticRegression",
                              "params": {"max_iter": 200}}}
    if form == "list":
        models = [{"name": f"m{i:05d}", "dataset": {"kind": "synthetic", "n_samples": 200, "seed": i}}
                  for i in range(n)]
        return {"name": "scale", "defaults": defaults, "models": models}
    rows = max(1, n // 100)
    return {"name": "scale", "defaults": defaults, "matrix": {
        "name": "m-{dataset}-{estimator}",
        "axes": {"dataset": {f"d{i}": {"kind": "synthetic", "n_samples": 200, "seed": i}
                             for i in range(rows)},
                 "estimator": {f"c{j}": {"class_path": "sklearn.linear_model.LogisticRegression",
                                 "params": {"C": 0.01 * (j + 1)}} for j in range(n // rows)}}}}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_spec(path: Path, n: int, form: str) -> None:
    path.write_text(yaml.safe_dump(spec(n, form), sort_keys=False))


def measure(n: int, form: str, broker: str, workdir: Path) -> dict[str, Any]:
    path = workdir / f"scale-{form}-{n}.yaml"
    # In a child process: dumping 100,000 models takes ~0.5 GB, which is not the producer's.
    writer = multiprocessing.get_context("spawn").Process(target=write_spec, args=(path, n, form))
    writer.start()
    writer.join()
    if writer.exitcode != 0:
        raise RuntimeError(f"writing the spec failed (exit code {writer.exitcode})")
    settings = Settings(broker_url=broker, artifact_root=workdir / "artifacts",  # type: ignore[arg-type]
                        max_models_per_batch=max(n, 10_000))
    app, runtime = create_app(settings), Runtime.from_settings(settings)
    rss0 = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    batch = load_batch(path, settings)
    t1, c1 = time.perf_counter(), time.process_time()
    rss_validate = _rss_mb()
    submit(batch, app, runtime, no_cache=True)
    t2, c2 = time.perf_counter(), time.process_time()
    queued = redis.Redis.from_url(broker).llen("preprocess")
    if len(batch.models) != n or queued < n:
        raise RuntimeError(f"expected {n} models queued, got {len(batch.models)} models, {queued} queued")
    return {"models": n, "form": form, "validate_s": t1 - t0, "submit_s": t2 - t1,
            "validate_cpu_s": c1 - c0, "submit_cpu_s": c2 - c1,
            "rss_start_mb": rss0, "rss_after_validate_mb": rss_validate, "rss_peak_mb": _rss_mb(),
            "spec_bytes": path.stat().st_size, "queued": queued}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, required=True)
    parser.add_argument("--form", choices=["list", "matrix"], default="list")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.models, args.form, args.broker, args.workdir)))


if __name__ == "__main__":
    main()
