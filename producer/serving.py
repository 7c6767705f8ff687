"""Load a deployed model from the registry and predict: the API a serving process uses.

    import modelfleet
    model = modelfleet.load_model("iris-forest@production")
    model.predict(rows)          # raw rows: a DataFrame with the dataset's columns
    modelfleet.predict_frame("iris-forest@production", frame)   # checked, a prediction column added
    modelfleet.predict_frame("store@production", frame, segment_by="Store")  # each row its store's model

The returned model is one scikit-learn Pipeline, its fitted features (impute,
scale, encoders, date parts) and the estimator, so it takes raw rows. (Versions
trained before features existed kept their impute/scale steps apart; they are
put in front here.) Every artifact is checked against its digest on load, and
only allow-listed types are deserialised (skops, no pickle). A version's input
schema (recorded by its preprocess stage, in the version's lineage) is checked
before a frame is predicted: a missing column or a value of the wrong type is a
SchemaError naming the column.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workers.contracts import ChainState
from workers.modelcache import cached_served
from workers.pipeline.history import HistoryError, check_history, with_lags
from workers.pipeline.schema import SchemaError, check_frame, model_input
from workers.runtime import Runtime
from workers.settings import Settings

PREDICTION, MODEL = "prediction", "model"


@dataclass(frozen=True)
class DeployedModel:
    """A registered version, loaded: its record and the fitted estimator."""

    name: str
    version: int
    record: dict[str, Any]
    estimator: Any
    # A lag model's last rows per series (workers/pipeline/history.py): it builds its own lags.
    history: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def lineage(self) -> ChainState:
        return ChainState.model_validate(self.record["lineage"])

    @property
    def input_schema(self) -> list[dict[str, Any]] | None:
        """The columns the model takes, as trained (None for versions trained before schemas)."""
        prepared = self.lineage.prepared
        if prepared is None or prepared.input_schema is None:
            return None
        return [c.model_dump(exclude_none=True) for c in prepared.input_schema]

    def predict(self, X: Any) -> Any:
        return self.estimator.predict(X)

    def predict_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Predictions for a frame's rows (its schema columns), and notes such as unseen
        categories; SchemaError (naming this model and the column) when the rows do not fit."""
        frame = self.with_lags(frame)
        schema = self.input_schema
        if schema is None:  # nothing recorded to check against: the model's own order
            return self.estimator.predict(frame), []
        try:
            checked, notes = check_frame(frame, schema)
        except SchemaError as exc:
            raise exc.of(self.ref) from None
        return self.estimator.predict(model_input(checked, self.estimator)), notes


    def with_lags(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows with the lag features a lag model takes, built from its stored history and
        the rows' own targets where given; HistoryError (naming this model) for rows out of reach."""
        if self.history is None:
            return frame
        try:
            return with_lags(frame, self.history, self.lineage.job.model.features.dates.format)
        except HistoryError as exc:
            raise HistoryError(f"{self.ref}: {exc}") from None


def load_deployed(ref: str, runtime: Runtime) -> DeployedModel:
    """`NAME@alias`, `NAME/version` or `NAME` (latest) -> the loaded version."""
    record = runtime.registry.resolve(ref)
    lineage = ChainState.model_validate(record["lineage"])
    if lineage.trained is None or lineage.prepared is None:
        raise ValueError(f"{ref}: version record has no trained model in its lineage")
    # store.get verifies each artifact's sha256, so a tampered file is refused; the types
    # audited at deploy (keyed by that digest) spare skops' second pass.
    settings = runtime.settings
    estimator = cached_served(runtime.store.get, lineage.trained.model_digest,
                              lineage.prepared.transform_digest, settings, record.get("trusted_types"))
    return DeployedModel(record["name"], int(record["version"]), record, estimator,
                         served_history(lineage, runtime))


def served_history(lineage: ChainState, runtime: Runtime) -> dict[str, Any] | None:
    """A lag model's stored last rows per series (digest-checked), or None."""
    digest = None if lineage.prepared is None else lineage.prepared.history_digest
    return None if digest is None else check_history(runtime.store.get_json(digest))


def load_model(ref: str, settings: Settings | None = None, runtime: Runtime | None = None) -> Any:
    """The fitted estimator (with its preprocessing) of `NAME@alias` or `NAME/version`."""
    runtime = runtime or Runtime.from_settings(settings or Settings())
    # A copy: the cached model is shared by this process's predicts, and the caller may refit it.
    return copy.deepcopy(load_deployed(ref, runtime).estimator)


def predict(ref: str, rows: Any, settings: Settings | None = None, runtime: Runtime | None = None) -> Any:
    """Load `NAME@alias` or `NAME/version` and predict raw feature rows with it."""
    runtime = runtime or Runtime.from_settings(settings or Settings())
    return load_deployed(ref, runtime).estimator.predict(rows)
