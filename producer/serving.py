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

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from producer.spec import segment_model_name
from workers.contracts import ChainState, CsvDataset
from workers.pipeline.history import HistoryError, check_history, with_lags
from workers.pipeline.schema import SchemaError, check_frame, model_input
from workers.pipeline.train import load_served
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
            raise SchemaError(exc.column, exc.reason, self.ref) from None
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
    # store.get verifies each artifact's sha256, so a tampered file is refused.
    estimator = load_served(runtime.store.get, lineage.trained.model_digest,
                            lineage.prepared.transform_digest, runtime.settings.allowed_estimator_prefixes)
    return DeployedModel(record["name"], int(record["version"]), record, estimator,
                         served_history(lineage, runtime))


def served_history(lineage: ChainState, runtime: Runtime) -> dict[str, Any] | None:
    """A lag model's stored last rows per series (digest-checked), or None."""
    digest = None if lineage.prepared is None else lineage.prepared.history_digest
    return None if digest is None else check_history(runtime.store.get_json(digest))


def load_model(ref: str, settings: Settings | None = None, runtime: Runtime | None = None) -> Any:
    """The fitted estimator (with its preprocessing) of `NAME@alias` or `NAME/version`."""
    runtime = runtime or Runtime.from_settings(settings or Settings())
    return load_deployed(ref, runtime).estimator


def predict(ref: str, rows: Any, settings: Settings | None = None, runtime: Runtime | None = None) -> Any:
    """Load `NAME@alias` or `NAME/version` and predict raw feature rows with it."""
    return load_model(ref, settings, runtime).predict(rows)


@dataclass
class Predicted:
    """A frame with its predictions: the input's columns, `prediction` and, per segment, the
    `model` version that made each row's; rows of segments without a model are left empty
    and counted in `unknown` (segment value -> rows)."""

    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)


def predict_frame(ref: str, frame: pd.DataFrame, runtime: Runtime,
                  segment_by: str | None = None) -> Predicted:
    """Predict every row with `ref`, or with `segment_by`: each row with its own segment's
    model of the family `ref` (`FAMILY@ALIAS`, or `FAMILY` for each segment's latest)."""
    if segment_by is None:
        model = load_deployed(ref, runtime)
        values, seen = model.predict_frame(frame)
        return Predicted(frame.assign(**{PREDICTION: values}), seen)
    if segment_by not in frame.columns:
        raise SchemaError(segment_by, f"missing from the input, needed by --segment-by; it has "
                          f"{[str(c) for c in frame.columns]}")
    if "/" in ref:
        raise ValueError(f"{ref}: a segment family is FAMILY@ALIAS or FAMILY (each segment's "
                         "latest), not one version")
    family, at, alias = ref.partition("@")
    if at and not alias:
        raise ValueError(f"{ref}: the alias after '@' is empty (FAMILY@ALIAS, or FAMILY for each "
                         "segment's latest version)")
    keys = segment_keys(frame[segment_by])
    out = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    used = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    notes: list[str] = []
    unknown: dict[str, int] = {}
    for value, rows in frame.groupby(keys, sort=False, dropna=False).groups.items():
        if pd.isna(value):  # no segment value: nothing to route by
            unknown["(missing)"] = len(rows)
            continue
        name = segment_model_name(family, str(value))
        try:
            model = load_deployed(f"{name}@{alias}" if alias else name, runtime)
        except KeyError:  # no such model, or none at the alias
            unknown[str(value)] = len(rows)
            continue
        dataset = model.lineage.job.model.dataset
        if not isinstance(dataset, CsvDataset) or dataset.segment_by != segment_by \
                or dataset.segment != str(value):
            raise ValueError(f"model {model.ref} is not the {segment_by}={value} segment of {family!r}")
        predicted, seen = model.predict_frame(frame.loc[rows])
        out.loc[rows] = list(predicted)
        used.loc[rows] = model.ref
        notes += seen
    if used.isna().all() and any(value != "(missing)" for value in unknown):
        # Not one segment has a model there: the family or the alias is wrong, not the rows.
        raise ValueError(f"{ref}: no {segment_by} segment of {family!r} has a model"
                       + (f" at alias {alias!r}" if alias else ""))
    result = frame.assign(**{PREDICTION: _typed(out), MODEL: used})
    return Predicted(result, notes, unknown)


def segment_keys(column: pd.Series) -> pd.Series:
    """A segment column as the text values segments were trained on: 8 and 8.0 read as "8";
    missing values stay missing."""
    if pd.api.types.is_float_dtype(column) and bool((column.dropna() % 1 == 0).all()):
        column = column.astype("Int64")
    text = column.astype(object)
    return text.where(text.isna(), text.astype(str))


def _typed(values: pd.Series) -> pd.Series:
    """Numbers back to a numeric column (empty rows NaN); labels stay as they are."""
    converted = pd.to_numeric(values, errors="coerce")
    return converted if converted.notna().sum() == values.notna().sum() else values
