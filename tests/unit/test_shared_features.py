"""Models of one split share their fitted feature steps (workers/pipeline/train.py): each fits
only its estimator, and the result is the same model, byte for byte, as a Pipeline fitted whole."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.conftest import EXAMPLE_DATA
from tests.unit.test_features import ALLOWED, DATES, WALMART, spec
from workers.contracts import ModelSpec
from workers.pipeline.data import load_dataset
from workers.pipeline.estimators import build_estimator
from workers.pipeline.features import build_model
from workers.pipeline.preprocess import Split, prepare
from workers.pipeline.train import (
    dump_model_and_types,
    features_key,
    fit,
    fit_features,
    fit_on_features,
    load_model,
    predict,
)

RIDGE = {"class_path": "sklearn.linear_model.Ridge", "params": {"alpha": 0.5}}
FOREST = {"class_path": "sklearn.ensemble.RandomForestRegressor",
          "params": {"n_estimators": 5, "max_depth": 3, "random_state": 1}}
SHAPES = {
    "numeric": {},
    "dates, categorical, log1p target": {
        "features": {"dates": DATES, "categorical": {"columns": ["Holiday_Flag"], "encode": "onehot"},
                     "target_transform": "log1p"}},
    "median impute, min-max scale": {"preprocess": {"impute": "median", "scale": "minmax"}},
}


def _split(model: ModelSpec) -> Split:
    return prepare(load_dataset(model.dataset, model.task, EXAMPLE_DATA), model)


def _pipeline(model: ModelSpec, split: Split) -> Any:
    return build_model(model, list(split.X_train.columns),
                       build_estimator(model.estimator, model.task, ALLOWED))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_models_fitted_on_shared_features_are_the_models_a_whole_fit_gives(shape: str) -> None:
    models = [spec(dataset={**WALMART, "segment": "3"}, estimator=est, **SHAPES[shape])
              for est in (RIDGE, FOREST)]
    split = _split(models[0])
    first = _pipeline(models[0], split)
    features = fit_features(first, split.X_train, split.y_train)
    for model in models:
        alone = fit(_pipeline(model, split), split.X_train, split.y_train)
        shared = fit_on_features(first if model is models[0] else _pipeline(model, split),
                                 features, split.y_train)
        assert shared.steps[0][1] is features.pipeline.steps[0][1]  # the very fitted steps
        assert dump_model_and_types(shared) == dump_model_and_types(alone)
        expected = alone.predict(split.X_test)
        assert np.array_equal(predict(shared, split.X_test, features), expected)
        # ... and the same again from the kept transform of the held-out rows
        assert np.array_equal(predict(shared, split.X_test, features), expected)
    # A model loaded from its file holds other objects: predicted through its own steps.
    loaded = load_model(dump_model_and_types(shared)[0], ALLOWED)
    assert np.array_equal(predict(loaded, split.X_test, features), expected)


def test_the_features_key_tells_apart_the_split_and_the_feature_params_not_the_estimator() -> None:
    ridge, forest = (spec(dataset={**WALMART, "segment": "3"}, estimator=e) for e in (RIDGE, FOREST))
    split = _split(ridge)
    key = features_key(_pipeline(ridge, split), "split-a")
    assert features_key(_pipeline(forest, split), "split-a") == key
    assert features_key(_pipeline(ridge, split), "split-b") != key
    for other in SHAPES.values():
        if other:
            changed = spec(dataset={**WALMART, "segment": "3"}, estimator=RIDGE, **other)
            assert features_key(_pipeline(changed, _split(changed)), "split-a") != key


def test_a_worker_shares_fitted_features_within_a_scope_only() -> None:
    # The train stage's scope is the batch under --no-cache (nothing computed for another batch
    # is reused, as with its cached steps), '' otherwise.
    from workers.stages import _fit_sharing_features

    ridge, forest = (spec(dataset={**WALMART, "segment": "5"}, estimator=e) for e in (RIDGE, FOREST))
    split = _split(ridge)
    _, first = _fit_sharing_features(_pipeline(ridge, split), split, "split-5", "batch-a")
    _, same = _fit_sharing_features(_pipeline(forest, split), split, "split-5", "batch-a")
    _, other = _fit_sharing_features(_pipeline(forest, split), split, "split-5", "batch-b")
    assert same is first and other is not first


def test_the_features_key_reads_array_params_whole() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    a = np.arange(5000.0)
    b = a.copy()
    b[2500] = -1.0  # numpy's repr of either shows "..." there
    keys = {features_key(Pipeline([("encode", OneHotEncoder(categories=[c])), ("estimator", Ridge())]), "d")
            for c in (a, b)}
    assert len(keys) == 2
