"""Load a deployed model from the registry and predict: the API a serving process uses.

    import modelfleet
    model = modelfleet.load_model("iris-forest@production")
    model.predict(rows)          # raw rows: a DataFrame with the dataset's columns
    modelfleet.predict("iris-forest@production", rows)   # the same, in one call

The returned model is one scikit-learn Pipeline, its fitted features (impute,
scale, encoders, date parts) and the estimator, so it takes raw rows. (Versions
trained before features existed kept their impute/scale steps apart; they are
put in front here.) Every artifact is checked against its digest on load, and
only allow-listed types are deserialised (skops, no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sklearn.pipeline import Pipeline

from workers.contracts import ChainState
from workers.pipeline.train import load_model as load_skops
from workers.runtime import Runtime
from workers.settings import Settings


@dataclass(frozen=True)
class DeployedModel:
    """A registered version, loaded: its record and the fitted estimator."""

    name: str
    version: int
    record: dict[str, Any]
    estimator: Any

    def predict(self, X: Any) -> Any:
        return self.estimator.predict(X)


def load_deployed(ref: str, runtime: Runtime) -> DeployedModel:
    """`NAME@alias`, `NAME/version` or `NAME` (latest) -> the loaded version."""
    record = runtime.registry.resolve(ref)
    lineage = ChainState.model_validate(record["lineage"])
    if lineage.trained is None or lineage.prepared is None:
        raise ValueError(f"{ref}: version record has no trained model in its lineage")
    allowed = runtime.settings.allowed_estimator_prefixes
    # store.get verifies each artifact's sha256, so a tampered file is refused.
    estimator = load_skops(runtime.store.get(lineage.trained.model_digest), allowed)
    if lineage.prepared.transform_digest is not None:
        transform = load_skops(runtime.store.get(lineage.prepared.transform_digest), allowed)
        estimator = Pipeline([("preprocess", transform), ("model", estimator)])
    return DeployedModel(record["name"], int(record["version"]), record, estimator)


def load_model(ref: str, settings: Settings | None = None, runtime: Runtime | None = None) -> Any:
    """The fitted estimator (with its preprocessing) of `NAME@alias` or `NAME/version`."""
    runtime = runtime or Runtime.from_settings(settings or Settings())
    return load_deployed(ref, runtime).estimator


def predict(ref: str, rows: Any, settings: Settings | None = None, runtime: Runtime | None = None) -> Any:
    """Load `NAME@alias` or `NAME/version` and predict raw feature rows with it."""
    return load_model(ref, settings, runtime).predict(rows)
