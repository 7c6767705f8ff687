"""A finished batch of N models written through the real storage classes (batch record,
specs, four run records and the final state per model), with no worker: for timing and
testing the read commands at fleet scale in seconds."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from workers.runtime import Runtime
from workers.settings import STAGES

STORES = 45


def took_fields(durations: list[float]) -> dict[str, float]:
    return {f"took_{stage}": seconds for stage, seconds in zip(STAGES, durations, strict=True)}


def write_batch(rt: Runtime, batch_id: str, n: int, seed: int = 0,
                took: bool = True) -> dict[str, dict[str, Any]]:
    """Half classification (accuracy), half regression (mae), tagged store=sNN and family;
    returns each model's spec, metrics and compute seconds (what the leaderboard must show).
    `took=False`: states without their stages' times, as workers before them wrote."""
    rnd, created = random.Random(seed), time.time() - 600
    models: dict[str, dict[str, Any]] = {}
    for i in range(n):
        task = "classification" if i % 2 == 0 else "regression"
        metric = "accuracy" if task == "classification" else "mae"
        models[f"m{i:05d}"] = {
            "spec": {"name": f"m{i:05d}", "task": task,
                     "tags": {"store": f"s{i % STORES:02d}", "family": ("tree", "linear")[i % 3 == 0]},
                     "evaluation": {"metrics": [metric], "primary": metric}},
            "metrics": {metric: round(rnd.uniform(0.5, 0.99) if task == "classification"
                                      else rnd.uniform(1.0, 50.0), 6)},
            "durations": [round(rnd.uniform(0.001, 0.2), 6) for _ in STAGES]}
    rt.tracker.create_batch(
        {"id": batch_id, "name": batch_id.split("-")[0], "created": created, "models": list(models),
         "primary_metrics": {n: next(iter(m["metrics"])) for n, m in models.items()}},
        list(models), {n: json.dumps(m["spec"]) for n, m in models.items()})
    for at, (name, m) in enumerate(models.items()):
        writes = rt.tracker.writes()
        started = created + at * 0.1
        for stage, seconds in zip(STAGES, m["durations"], strict=True):
            rt.tracker.run(writes, {
                "batch_id": batch_id, "model": name, "stage": stage, "params": {}, "inputs": [],
                "cache_key": None, "started": started, "finished": started + seconds,
                "duration": seconds, "status": "succeeded", "error": None, "cache_hit": False,
                "metrics": m["metrics"] if stage == "evaluate" else {}, "outputs": [], "result": {},
                "tags": m["spec"]["tags"], "worker": "w1", "task_id": "", "code_version": 1,
                "libraries": {}})
            started += seconds
        rt.tracker.state(writes, batch_id, name, status="deployed", stage="deploy", version=1,
                         promoted=1, reason="gate passed", metrics=m["metrics"], error="",
                         done_deploy=started + 1.0, worker="w1",
                         **(took_fields(m["durations"]) if took else {}))
        writes.execute()
        m["compute"] = sum(m["durations"])
    return models
