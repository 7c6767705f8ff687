"""One rehearsal of the steps on a tiny table, so that a worker's pool children start warm.

Importing the libraries is not all a first stage pays: scipy loads submodules on first
use, scikit-learn's input checks look up narwhals' entry points once per process, skops
and pyarrow build their tables on first call. Rehearsed once in the worker's main process
before it forks, all of that is done once and shared by every child (it cost each child's
first task about 0.2 s of CPU, more on a loaded machine).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from workers.contracts import ModelSpec
from workers.pipeline.data import load_dataset
from workers.pipeline.estimators import build_estimator
from workers.pipeline.evaluate import compute_metrics
from workers.pipeline.features import build_model
from workers.pipeline.preprocess import dump_split, load_split, prepare
from workers.pipeline.schema import input_schema
from workers.pipeline.train import dump_model, fit, load_model

# A classifier and a regressor from the families specs use most, on a synthetic table.
_MODELS = [
    {"name": "warm-classifier", "task": "classification",
     "estimator": {"class_path": "sklearn.linear_model.LogisticRegression"}, "evaluation": {
         "metrics": ["accuracy", "f1_macro"], "primary": "accuracy"}},
    {"name": "warm-regressor", "task": "regression",
     "estimator": {"class_path": "sklearn.tree.DecisionTreeRegressor", "params": {"max_depth": 2}},
     "evaluation": {"metrics": ["r2", "mae", "rmse"], "primary": "r2"}},
]


def rehearse() -> None:
    """Prepare, store and read back, fit, save and load, and score two tiny models."""
    for raw in _MODELS:
        model = ModelSpec.model_validate({**raw, "dataset": {
            "kind": "synthetic", "n_samples": 40, "n_features": 3, "n_informative": 2}})
        split = prepare(load_dataset(model.dataset, model.task, Path(".")), model)
        X_train = load_split(dump_split(split)).X_train  # the split artifacts' format, both ways
        buffer = io.BytesIO()  # and Parquet's (data files, score chunks)
        split.X_train.to_parquet(buffer, index=False)
        pd.read_parquet(io.BytesIO(buffer.getvalue()))
        input_schema(X_train)
        estimator = build_estimator(model.estimator, model.task, ["sklearn."])
        fitted = fit(build_model(model, list(X_train.columns), estimator), X_train, split.y_train)
        loaded = load_model(dump_model(fitted), ["sklearn."])
        compute_metrics(loaded, split.X_test, split.y_test, model.metric_names)
