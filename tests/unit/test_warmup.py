"""The worker's warm-up: after the rehearsal a first stage imports nothing more."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

# A first train and evaluate as a pool child runs them, after (or without) the rehearsal.
FIRST_STAGE = """
import io, json, sys
from pathlib import Path
import pandas as pd
import workers.warm  # noqa: F401  (what a worker imports; the rehearsal runs at worker_init)
from workers.contracts import ModelSpec
from workers.pipeline.data import load_dataset
from workers.pipeline.estimators import build_estimator
from workers.pipeline.evaluate import compute_metrics
from workers.pipeline.features import build_model
from workers.pipeline.preprocess import prepare
from workers.pipeline.train import dump_model, fit, load_model
if sys.argv[1] == "warm":
    from workers.pipeline.warmup import rehearse
    rehearse()
before = set(sys.modules)
model = ModelSpec.model_validate({"name": "m", "task": "regression",
    "dataset": {"kind": "synthetic", "n_samples": 60, "n_features": 4, "n_informative": 2, "seed": 3},
    "estimator": {"class_path": "sklearn.linear_model.Ridge", "params": {"alpha": 0.5}},
    "evaluation": {"metrics": ["r2", "mape"], "primary": "r2"}})
split = prepare(load_dataset(model.dataset, model.task, Path(".")), model)
buffer = io.BytesIO()
split.X_train.to_parquet(buffer, index=False)
X = pd.read_parquet(io.BytesIO(buffer.getvalue()))
fitted = fit(build_model(model, list(X.columns), build_estimator(model.estimator, model.task, ["sklearn."])),
             X, split.y_train)
compute_metrics(load_model(dump_model(fitted), ["sklearn."]), split.X_test, split.y_test, model.metric_names)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def first_stage_imports(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", FIRST_STAGE, mode], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_after_the_rehearsal_a_first_stage_imports_nothing_more() -> None:
    # Given a process that imported the stages' modules, as a worker's main process does:
    # without the rehearsal its first stage still imports modules (lazily, in the child) ...
    assert first_stage_imports("cold") != []
    # ... and after it, none: the children forked from it start warm
    assert first_stage_imports("warm") == []
