"""Time and memory of the producer: validate (load_batch) and submit n models.

Run in a fresh subprocess per size, so `ru_maxrss` is that size's own peak:
    python -m bench.producer_scale --models 10000 --broker redis://127.0.0.1:PORT/0 --workdir DIR
Prints one JSON line. No workers consume: the messages stay queued and are counted
(fewer messages than models when the platform packs several models per message); the
models are checked against the batch record. `--pack` sets the spec's `pack` key
(default: none, i.e. the platform's default).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app, queue_lists
from workers.runtime import Runtime
from workers.settings import Settings


def spec(n: int, form: str, pack: str | None = None) -> dict[str, Any]:
    """n distinct models, as an explicit list (the worst case for parsing) or as a matrix."""
    top: dict[str, Any] = {"name": "scale"} if pack is None else {
        "name": "scale", "pack": int(pack) if pack.isdigit() else pack}
    defaults = {"task": "classification", "evaluation": {"metrics": ["accuracy"]},
                "estimator": {"class_path": "sklearn.linear_model.LogisticRegression",
                              "params": {"max_iter": 200}}}
    if form == "list":
        models = [{"name": f"m{i:05d}", "dataset": {"kind": "synthetic", "n_samples": 200, "seed": i}}
                  for i in range(n)]
        return {**top, "defaults": defaults, "models": models}
    rows = max(1, n // 100)
    return {**top, "defaults": defaults, "matrix": {
        "name": "m-{dataset}-{estimator}",
        "axes": {"dataset": {f"d{i}": {"kind": "synthetic", "n_samples": 200, "seed": i}
                             for i in range(rows)},
                 "estimator": {f"c{j}": {"class_path": "sklearn.linear_model.LogisticRegression",
                                 "params": {"C": 0.01 * (j + 1)}} for j in range(n // rows)}}}}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def spec_path(n: int, form: str, workdir: Path, pack: str | None) -> Path:
    return workdir / f"scale-{form}-{n}-{pack or 'default'}.yaml"


def measure(n: int, form: str, broker: str, workdir: Path, pack: str | None = None) -> dict[str, Any]:
    path = spec_path(n, form, workdir, pack)
    # Written by another process: building and dumping 100k models' YAML would raise this one's peak RSS.
    subprocess.run([sys.executable, "-m", "bench.producer_scale", "--models", str(n), "--form", form,
                    "--workdir", str(workdir), *(["--pack", pack] if pack else []), "--write-only"],
                   check=True)
    settings = Settings(broker_url=broker, artifact_root=workdir / "artifacts",  # type: ignore[arg-type]
                        max_models_per_batch=max(n, 10_000),
                        # A 100k-model matrix written out is ~23 MB: past the default expanded-size limit.
                        max_spec_bytes=max(20_000_000, 400 * n))
    app, runtime = create_app(settings), Runtime.from_settings(settings)
    rss0 = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    batch = load_batch(path, settings)
    t1, c1 = time.perf_counter(), time.process_time()
    rss_validate = _rss_mb()
    handle = submit(batch, app, runtime, no_cache=True)
    t2, c2 = time.perf_counter(), time.process_time()
    client = redis.Redis.from_url(broker)
    # Messages (one per chain, a chain may carry a pack of models), in every priority's list.
    queued = sum(client.llen(q) for q in queue_lists("preprocess"))
    record = runtime.tracker.get_batch(handle.batch_id) or {}
    recorded = len(record.get("models", []))
    if len(batch.models) != n or recorded != n or not 0 < queued <= n:
        raise RuntimeError(f"expected {n} models: {len(batch.models)} validated, {recorded} in the batch "
                           f"record, {queued} messages queued")
    return {"models": n, "form": form, "pack": pack, "validate_s": t1 - t0, "submit_s": t2 - t1,
            "validate_cpu_s": c1 - c0, "submit_cpu_s": c2 - c1,
            "rss_start_mb": rss0, "rss_after_validate_mb": rss_validate, "rss_peak_mb": _rss_mb(),
            "spec_bytes": path.stat().st_size, "queued": queued,
            "redis_used_mb": int(client.info("memory")["used_memory"]) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, required=True)
    parser.add_argument("--form", choices=["list", "matrix"], default="list")
    parser.add_argument("--broker", help="required unless --write-only")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--pack", help="the spec's `pack` key: auto or a number (default: no key)")
    parser.add_argument("--write-only", action="store_true", help="only write the spec file")
    args = parser.parse_args()
    if args.write_only:
        spec_path(args.models, args.form, args.workdir, args.pack).write_text(
            yaml.safe_dump(spec(args.models, args.form, args.pack), sort_keys=False))
        return
    if not args.broker:
        parser.error("--broker is required")
    print(json.dumps(measure(args.models, args.form, args.broker, args.workdir, args.pack)))


if __name__ == "__main__":
    main()
