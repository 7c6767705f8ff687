"""Segment predict against the load floor (issue 18, target 4).

    python bench/predict_segments.py                        # 45 stores, 200-tree gradient boosting
    python bench/predict_segments.py --stores 10 --trees 50 --repeats 1

Trains one model per store (GradientBoostingRegressor, TREES trees, on a fresh Redis and
artifact root with 2 local workers), then times, each in a fresh process:

- `modelfleet predict store@production IN --segment-by Store --out OUT` (STORES x 4 rows),
  cold (this machine's load cache of loaded models emptied before each) and warm (read from it);
- the floor: a process that imports pandas, scikit-learn and skops and loads the same
  STORES models from joblib files (no registry, no digest check, no audit);
- with `--score`: `modelfleet score --segment-by` of the same rows, twice, on one fresh
  score worker (the second job finds the models in the worker's cache).

Both are wall times of the whole process (interpreter start included), the best of
REPEATS, given with the machine's load, also in bench/results/predict_segments.json. Not
part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.machine import describe  # noqa: E402
from producer.local import LocalWorkers, RedisServer  # noqa: E402
from producer.serving import load_deployed  # noqa: E402
from producer.spec import load_batch  # noqa: E402
from producer.submit import submit  # noqa: E402
from workers.app import create_app  # noqa: E402
from workers.runtime import Runtime  # noqa: E402
from workers.settings import SCORE_QUEUE, Settings  # noqa: E402

FEATURES = [f"x{i}" for i in range(6)]
FLOOR = """
import sys, time
import joblib, pandas, sklearn.ensemble, skops.io
models = [joblib.load(p) for p in sys.argv[1:]]
print(len(models))
"""


def stores_csv(path: Path, stores: int, rows: int) -> None:
    rng = np.random.default_rng(0)
    parts = []
    for store in range(1, stores + 1):
        X = rng.normal(size=(rows, len(FEATURES)))
        parts.append(pd.DataFrame(X, columns=FEATURES).assign(
            Store=store, y=X @ rng.normal(size=len(FEATURES)) + store))
    pd.concat(parts).to_csv(path, index=False)


def timed(cmd: list[str], env: dict[str, str], cwd: Path, repeats: int,
          prepare: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """The best wall time and the best CPU time (user + system) of the process, over `repeats`
    (each after `prepare()`): on a shared machine the CPU time is the steadier figure."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        prepare()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
        best = min(best, time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_cpu = min(best_cpu, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        assert done.returncode == 0, done.stderr[-2000:]
    return best, best_cpu


def score_twice(settings: Settings, env: dict[str, str], tmp: Path) -> dict[str, float]:
    """`score --segment-by` of the same rows twice on one fresh score worker: the first job
    loads the 45 models, the second finds them in the worker's model cache."""
    out: dict[str, float] = {}
    with LocalWorkers(settings, 1, tmp / "logs", queues=[SCORE_QUEUE], name_prefix="score"):
        for run in ("score_cold_s", "score_warm_s"):
            out[run] = round(timed([sys.executable, "-m", "producer", "score", "store@production", "in.csv",
                                    "--segment-by", "Store", "--out", "scored", "--chunk-rows", "50"],
                                   env, tmp, 1)[0], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stores", type=int, default=45)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--train-rows", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "predict_segments.json",
                        help="where the run's row is written (JSON)")
    parser.add_argument("--score", action="store_true",
                        help="Also time `score --segment-by` of the same rows twice on one score worker.")
    parser.add_argument("--workdir", type=Path,
                        help="Keep the trained models here and reuse them on the next run (Redis is "
                             "append-only): before/after figures on the same models.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="predict-segments-") as tmp_dir:
        tmp = args.workdir or Path(tmp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        trained = (tmp / "trained").exists()
        with RedisServer(tmp / "redis") as server:
            settings = Settings(broker_url=server.url, artifact_root=tmp / "artifacts",  # type: ignore[arg-type]
                                data_root=tmp)
            app, runtime = create_app(settings), Runtime.from_settings(settings)
            spec = {"name": "predict-bench", "models": [{
                "name": "store", "task": "regression",
                "dataset": {"kind": "csv", "path": "stores.csv", "target": "y", "segment_by": "Store"},
                "estimator": {"class_path": "sklearn.ensemble.GradientBoostingRegressor",
                              "params": {"n_estimators": args.trees, "random_state": 0}},
                "evaluation": {"metrics": ["mae"], "primary": "mae"}}]}
            if not trained:
                stores_csv(tmp / "stores.csv", args.stores, args.train_rows)
                (tmp / "spec.json").write_text(json.dumps(spec))
                started = time.perf_counter()
                with LocalWorkers(settings, 2, tmp / "logs"):
                    status = submit(load_batch(tmp / "spec.json", settings), app, runtime).wait(timeout=1800)
                assert not {"failed", "cancelled"} & set(status.counts), status.rows
                print(f"trained {args.stores} models in {time.perf_counter() - started:.1f} s", flush=True)
                (tmp / "trained").touch()
            app.close()
            rows = pd.read_csv(tmp / "stores.csv").groupby("Store").head(4).drop(columns="y")
            rows.to_csv(tmp / "in.csv", index=False)
            paths = []
            for store in range(1, args.stores + 1):
                paths.append(str(tmp / f"{store}.joblib"))
                joblib.dump(load_deployed(f"store-{store}@production", runtime).estimator, paths[-1])
            env = {**os.environ, **settings.to_env(),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            floored = timed([sys.executable, "-c", FLOOR, *paths], env, tmp, args.repeats)
            predict = [sys.executable, "-m", "producer", "predict", "store@production", "in.csv",
                       "--segment-by", "Store", "--out", "out.csv", "--force"]
            # Cold: this machine's load cache empty (the first predict of these versions here);
            # warm: the next predicts, which read the loaded models from it (workers/loadcache.py).
            loaded = tmp / "loaded"
            env["MODELFLEET_MODEL_LOAD_CACHE"] = str(loaded)
            cold = timed(predict, env, tmp, args.repeats, lambda: shutil.rmtree(loaded, ignore_errors=True))
            predicted = timed(predict, env, tmp, args.repeats)
            assert pd.read_csv(tmp / "out.csv")["prediction"].notna().all()
            scored = score_twice(settings, env, tmp) if args.score else {}
    (predict, predict_cpu), (floor, floor_cpu), (cold_s, cold_cpu) = predicted, floored, cold
    row = {"stores": args.stores, "trees": args.trees, "rows": 4 * args.stores,
           "predict_s": round(predict, 2), "floor_s": round(floor, 2), "ratio": round(predict / floor, 2),
           "predict_cpu_s": round(predict_cpu, 2), "floor_cpu_s": round(floor_cpu, 2),
           "cpu_ratio": round(predict_cpu / floor_cpu, 2),
           "predict_cold_s": round(cold_s, 2), "predict_cold_cpu_s": round(cold_cpu, 2),
           "cold_cpu_ratio": round(cold_cpu / floor_cpu, 2), **scored, "repeats": args.repeats,
           "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": describe()}
    print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=1) + "\n")
    print(f"segment predict {predict:.2f} s ({predict_cpu:.2f} s CPU), load floor {floor:.2f} s "
          f"({floor_cpu:.2f} s CPU): {predict / floor:.2f}x wall, {predict_cpu / floor_cpu:.2f}x CPU; "
          f"cold (empty load cache) {cold_s:.2f} s ({cold_cpu:.2f} s CPU, {cold_cpu / floor_cpu:.2f}x)")


if __name__ == "__main__":
    main()
