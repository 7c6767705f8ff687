"""The three workloads of the scaling benchmark, as batch specs."""

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

    def repeats_for(self, k: int, t_chain: float, repeats: int) -> int:
        """Repeats of a row with k slots: one when its ideal time is over long_row_s."""
        return 1 if -(-self.n // k) * t_chain > self.long_row_s else repeats

    def spec(self, tag: str) -> dict[str, Any]:
        """A batch of n distinct models (data seeded per model) named for this run."""
        models = [{"name": f"{self.name}-{tag}-{i:04d}",
                   "dataset": {**self.dataset, "seed": i}} for i in range(self.n)]
        return {"name": f"bench-{self.name}", "defaults": {
            "task": "classification", "estimator": self.estimator,
            "evaluation": {"metrics": ["accuracy"]}}, "models": models}


TINY = {"kind": "synthetic", "n_samples": 40, "n_features": 4, "n_informative": 2}


def workloads(quick: bool) -> list[Workload]:
    cores = os.cpu_count() or 1
    if quick:
        return [
            Workload("cpu", "CPU-bound (GradientBoosting fits)", 6, core_ks(cores),
                     {"kind": "synthetic", "n_samples": 500, "n_features": 20, "n_informative": 10},
                     {"class_path": "sklearn.ensemble.GradientBoostingClassifier",
                      "params": {"n_estimators": 20, "random_state": 0}}),
            Workload("io", "I/O-bound (0.2 s wait in fit)", 16, (1, 4, 16), TINY,
                     {"class_path": "bench.workloads.WaitingClassifier", "params": {"seconds": 0.2}}),
            Workload("noop", "no-op (platform overhead)", 40, (1, 2), TINY,
                     {"class_path": "bench.workloads.NoOpClassifier", "params": {}}),
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
        Workload("noop", "no-op (platform overhead)", 256, (1, 2, 4), TINY,
                 {"class_path": "bench.workloads.NoOpClassifier", "params": {}},
                 notes="40-row data, an estimator that does nothing: what is left is overhead"),
    ]
