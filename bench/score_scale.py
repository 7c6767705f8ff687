"""Scoring a million rows on 1 and 2 workers: `modelfleet score`'s path (producer.scoring).

    .venv/bin/python -m bench.score_scale --rows 1000000 --workers 1 2

Trains one regression model (a random forest on 10 synthetic numeric features) on a
fresh Redis and artifact root, writes ROWS synthetic rows, then scores them with K
`score` workers for each K. rows/s counts the workers' part: from sending the chunks'
tasks to the last result; `total` adds reading, the schema check, storing the chunks,
joining and writing the output.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from producer.local import LocalWorkers, RedisServer
from producer.scoring import score_table
from producer.spec import load_batch
from producer.submit import submit
from workers.app import create_app
from workers.runtime import Runtime
from workers.settings import SCORE_QUEUE, Settings

SPEC = {"name": "score-bench", "models": [{
    "name": "forest", "task": "regression",
    "dataset": {"kind": "synthetic", "n_samples": 5000, "n_features": 10, "n_informative": 8, "seed": 1},
    "estimator": {"class_path": "sklearn.ensemble.RandomForestRegressor",
                  "params": {"n_estimators": 40, "max_depth": 10, "random_state": 0}},
    "evaluation": {"metrics": ["r2"]}}]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="score-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        with RedisServer(tmp / "redis") as server:
            settings = Settings(broker_url=server.url, artifact_root=tmp / "artifacts")  # type: ignore[arg-type]
            app, runtime = create_app(settings), Runtime.from_settings(settings)
            (tmp / "spec.json").write_text(json.dumps(SPEC))
            with LocalWorkers(settings, 1, tmp / "logs"):
                status = submit(load_batch(tmp / "spec.json", settings), app, runtime).wait(timeout=300)
            assert not {"failed", "cancelled"} & set(status.counts), status.rows
            rng = np.random.default_rng(0)
            frame = pd.DataFrame(rng.normal(size=(args.rows, 10)), columns=[f"x{i}" for i in range(10)])
            for k in args.workers:
                with LocalWorkers(settings, k, tmp / "logs", queues=[SCORE_QUEUE], name_prefix=f"s{k}-"):
                    started = time.perf_counter()
                    result = score_table("forest@production", frame, runtime, app, tmp / f"out{k}",
                                         args.chunk_rows, timeout=1800, check_workers=False)
                    wall = time.perf_counter() - started
                row = {"workers": k, "rows": result.rows, "chunks": result.chunks,
                       "scoring_s": round(result.scoring_seconds, 2), "total_s": round(wall, 2),
                       "rows_per_s": round(result.rows_per_second), "per_worker": result.per_worker}
                print(json.dumps(row), flush=True)
                out.append(row)
            app.close()
    base = out[0]["scoring_s"]
    for row in out:
        print(f"{row['workers']} worker(s): {row['rows_per_s']:,} rows/s "
              f"(x{base / row['scoring_s']:.2f}), {row['total_s']} s in all")


if __name__ == "__main__":
    main()
