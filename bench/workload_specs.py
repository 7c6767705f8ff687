"""The workloads of the scaling benchmark, as batch specs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def core_ks(limit: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to `limit` (the CPU-bound workload stops at the core count)."""
    ks, k = [], 1
    while k <= max(limit, 1):
        ks.append(k)
        k *= 2
    return tuple(ks)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    n: int
    ks: tuple[int, ...]
    dataset: dict[str, Any]
    estimator: dict[str, Any]
    loop_repeats: int | None = None  # None: the run's --repeats
    # Rows whose ideal time exceeds this run once: a row of 64 one-second chains
    # averages itself, and three repeats of the k = 1 and 2 rows alone would take 10 minutes.
    long_row_s: float = float("inf")
    notes: str = field(default="")
    task: str = "classification"
    # Several estimators (label -> estimator): the batch is a matrix over them, each
    # expanded per segment of the dataset (`segment_by`); `estimator` is then the first.
    estimators: dict[str, dict[str, Any]] | None = None
    packed: bool = False  # also run modelfleet with `pack: auto` (rows "<method>-packed")
    peer: bool = False  # also run the hand-written Celery peer (bench/peer.py)

    def repeats_for(self, k: int, t_chain: float, repeats: int) -> int:
        """Repeats of a row with k slots: one when its ideal time is over long_row_s."""
        return 1 if -(-self.n // k) * t_chain > self.long_row_s else repeats

    def spec(self, tag: str, pack: int | str | None = None) -> dict[str, Any]:
        """A batch of n distinct models named for this run; `pack` goes in as the top-level key."""
        metric = "accuracy" if self.task == "classification" else "r2"
        defaults: dict[str, Any] = {"task": self.task, "evaluation": {"metrics": [metric]}}
        body: dict[str, Any]
        if self.estimators is not None:
            body = {"matrix": {"name": f"{self.name}-{tag}-{{estimator}}", "base": {"dataset": self.dataset},
                               "axes": {"estimator": self.estimators}}}
        else:
            defaults["estimator"] = self.estimator
            body = {"models": [{"name": f"{self.name}-{tag}-{i:04d}", "dataset": {**self.dataset, "seed": i}}
                               for i in range(self.n)]}
        return {"name": f"bench-{self.name}", **({} if pack is None else {"pack": pack}),
                "defaults": defaults, **body}


TINY = {"kind": "synthetic", "n_samples": 40, "n_features": 4, "n_informative": 2}
NOOP = {"class_path": "bench.workloads.NoOpClassifier", "params": {}}
# The 45 Walmart stores of examples/data (data_root = the repository): one model per store.
WALMART = {"kind": "csv", "path": "examples/data/walmart_weekly_sales.csv", "target": "Weekly_Sales",
           "segment_by": "Store"}
STORES = 45
RIDGE = {"ridge": {"class_path": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}}}
# 5 Ridge alphas and 5 shallow 10-tree forests per store: 450 small models.
SMALL = {
    **{f"ridge{i}": {"class_path": "sklearn.linear_model.Ridge", "params": {"alpha": alpha}}
       for i, alpha in enumerate((0.01, 0.1, 1.0, 10.0, 100.0))},
    **{f"forest{i}": {"class_path": "sklearn.ensemble.RandomForestRegressor",
                      "params": {"n_estimators": 10, "max_depth": 4, "random_state": i}} for i in range(5)},
}


def segmented(name: str, title: str, ks: tuple[int, ...], estimators: dict[str, dict[str, Any]],
              notes: str) -> Workload:
    return Workload(name, title, STORES * len(estimators), ks, WALMART, next(iter(estimators.values())),
                    notes=notes, task="regression", estimators=estimators, packed=True)


def workloads(quick: bool) -> list[Workload]:
    cores = os.cpu_count() or 1
    tiny = segmented("tiny", "tiny (45 Walmart stores, Ridge)", (1, 2), RIDGE,
                     "one Ridge per store (`segment_by: Store`): milliseconds of fit, the platform "
                     "case of many small models")
    small = segmented("small450", "450 small per-store models, `modelfleet submit --wait` on k workers",
                      (2,),
                      SMALL, "45 stores x (5 Ridge alphas + 5 RandomForestRegressor(n_estimators=10, "
                      "max_depth=4)); the loop reads the CSV once, fits and joblib.dumps each model "
                      "(no split, scaling or metrics); modelfleet is the CLI, its start included, "
                      "against 2 running workers")
    if quick:
        return [
            Workload("cpu", "CPU-bound (GradientBoosting fits)", 6, core_ks(cores),
                     {"kind": "synthetic", "n_samples": 500, "n_features": 20, "n_informative": 10},
                     {"class_path": "sklearn.ensemble.GradientBoostingClassifier",
                      "params": {"n_estimators": 20, "random_state": 0}}),
            Workload("io", "I/O-bound (0.2 s wait in fit)", 16, (1, 4, 16), TINY,
                     {"class_path": "bench.workloads.WaitingClassifier", "params": {"seconds": 0.2}}),
            Workload("noop", "no-op (platform overhead)", 40, (1, 2), TINY, NOOP, packed=True, peer=True),
            tiny, small,
        ]
    return [
        Workload("cpu", "CPU-bound (GradientBoosting fits)", 16, core_ks(cores),
                 {"kind": "synthetic", "n_samples": 2000, "n_features": 20, "n_informative": 10},
                 {"class_path": "sklearn.ensemble.GradientBoostingClassifier",
                  "params": {"n_estimators": 100, "random_state": 0}},
                 notes="about 0.7 s per model on this machine; "
                       "with 16 models the tail (16th of 16) is 0 by definition"),
        Workload("io", "I/O-bound (1 s wait in fit)", 64, (1, 2, 4, 8, 16), TINY,
                 {"class_path": "bench.workloads.WaitingClassifier", "params": {"seconds": 1.0}},
                 # The loop is n sleeps in a row (64 s): one repeat, its 64 chains average out.
                 loop_repeats=1, long_row_s=30.0,
                 notes="the whole 1 s is in train (fit); the other stages do their real, tiny work"),
        Workload("noop", "no-op (platform overhead)", 256, (1, 2, 4, 8) if cores >= 16 else (1, 2, 4), TINY,
                 NOOP, packed=True, peer=True,
                 notes="40-row data, an estimator that does nothing: what is left is overhead"),
        tiny, small,
    ]
