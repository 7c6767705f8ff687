"""The baselines: the plain loop and multiprocessing.Pool over the same pure stage functions.

`run_chain` does what the four stage tasks do minus Celery, Redis and
tracking: load, prepare, fit, persist (skops) and score, with the same
artifact-store writes and reads, so the comparison is about the platform.
"""

from __future__ import annotations

import csv
import importlib
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from threadpoolctl import threadpool_limits

from workers.contracts import ModelSpec
from workers.pipeline.data import load_dataset
from workers.pipeline.estimators import build_estimator
from workers.pipeline.evaluate import compute_metrics
from workers.pipeline.features import build_model
from workers.pipeline.preprocess import dump_split, load_split, prepare
from workers.pipeline.train import dump_model, fit, load_model
from workers.store import ArtifactStore


def run_chain(model: ModelSpec, store: ArtifactStore, prefixes: Sequence[str],
              data_root: Path) -> dict[str, float]:
    """One model, preprocess -> train -> evaluate, as the stages do it; returns its metrics."""
    table = load_dataset(model.dataset, model.task, data_root)
    data_digest = store.put(dump_split(prepare(table, model)))
    estimator = build_estimator(model.estimator, model.task, prefixes)
    split = load_split(store.get(data_digest))
    pipeline = build_model(model, list(split.X_train.columns), estimator)
    model_digest = store.put(dump_model(fit(pipeline, split.X_train, split.y_train)))
    split = load_split(store.get(data_digest))
    fitted = load_model(store.get(model_digest), prefixes)
    metrics = compute_metrics(fitted, split.X_test, split.y_test, model.metric_names)
    store.put_json({"metrics": metrics, "model_digest": model_digest, "data_digest": data_digest})
    return metrics


def run_loop(models: Sequence[ModelSpec], store_root: Path, prefixes: Sequence[str],
             data_root: Path) -> tuple[float, list[float], float]:
    """The O(n) starting point: (wall seconds, each model's finish offset, CPU seconds)."""
    store = ArtifactStore(store_root)
    finishes = []
    with threadpool_limits(1):
        t0, cpu0 = time.perf_counter(), time.process_time()
        for model in models:
            run_chain(model, store, prefixes, data_root)
            finishes.append(time.perf_counter() - t0)
    return finishes[-1], finishes, time.process_time() - cpu0


# Set per pool by the initializer, so each task only ships the model spec.
_POOL_ARGS: tuple[ArtifactStore, Sequence[str], Path] | None = None


def _init(store_root: Path, prefixes: Sequence[str], data_root: Path) -> None:
    global _POOL_ARGS
    threadpool_limits(1)
    _POOL_ARGS = (ArtifactStore(store_root), prefixes, data_root)


def _pool_chain(model: ModelSpec) -> str:
    assert _POOL_ARGS is not None
    run_chain(model, *_POOL_ARGS)
    return model.name


def run_pool(models: Sequence[ModelSpec], k: int, store_root: Path, prefixes: Sequence[str],
             data_root: Path) -> tuple[float, list[float], float]:
    """multiprocessing.Pool(k), one chain per task: (wall, finish offsets, pool startup)."""
    started = time.perf_counter()
    with multiprocessing.Pool(k, initializer=_init, initargs=(store_root, prefixes, data_root)) as pool:
        # Make every process live before t0, as the Celery workers are.
        pool.map(abs, range(k), chunksize=1)
        startup = time.perf_counter() - started
        t0 = time.perf_counter()
        finishes = [time.perf_counter() - t0 for _ in pool.imap_unordered(_pool_chain, models)]
    return finishes[-1], finishes, startup


def run_sklearn_loop(csv_path: Path, target: str, segment_by: str,
                     estimators: Mapping[str, Mapping[str, Any]],
                     out_dir: Path) -> tuple[float, list[float], float]:
    """What one writes without a platform: read the CSV once, then per segment and estimator
    fit on that segment's rows and joblib.dump the model. No split, scaling or metrics.

    Features: every numeric column but the target and the segment column (as modelfleet
    picks them). Returns (wall seconds, each model's finish offset, CPU seconds).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    finishes = []
    with threadpool_limits(1):
        t0, cpu0 = time.perf_counter(), time.process_time()
        with csv_path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows = [r for r in reader if r]
        segment_col = [r[header.index(segment_by)] for r in rows]
        numeric = [i for i, name in enumerate(header)
                   if name not in (target, segment_by) and _is_float(rows[0][i])]
        X = np.array([[float(r[i]) for i in numeric] for r in rows])
        y = np.array([float(r[header.index(target)]) for r in rows])
        for segment in dict.fromkeys(segment_col):
            mask = np.array([s == segment for s in segment_col])
            for label, spec in estimators.items():
                module, name = str(spec["class_path"]).rsplit(".", 1)
                model = getattr(importlib.import_module(module), name)(**spec.get("params", {}))
                joblib.dump(model.fit(X[mask], y[mask]), out_dir / f"{segment}-{label}.joblib")
                finishes.append(time.perf_counter() - t0)
    return finishes[-1], finishes, time.process_time() - cpu0


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
