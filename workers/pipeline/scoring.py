"""Score a chunk of rows with a fitted model, or each row with its segment's: the pure part
of the `score` task."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pandas as pd

from workers.pipeline.schema import SchemaError, check_frame, model_input

PREDICTION, MODEL = "prediction", "model"
# A segment's model as the task hands it over: its ref, the estimator and its input schema.
Segment = tuple[str, Any, list[dict[str, Any]] | None]


def score_frame(estimator: Any, schema: list[dict[str, Any]] | None, frame: pd.DataFrame) -> pd.DataFrame:
    """One `prediction` column for the frame's rows, checked against the schema if there is one."""
    rows = frame if schema is None else check_frame(frame, schema)[0]
    X = model_input(rows, estimator) if schema is not None else rows.to_numpy()
    return pd.DataFrame({PREDICTION: estimator.predict(X)})


def score_segments(frame: pd.DataFrame, segment_by: str,
                   model: Callable[[str], Segment | None]) -> tuple[pd.DataFrame, dict[str, int]]:
    """`prediction` and `model` columns for the frame's rows, each row by its segment value's
    model (`model(value)`, None: no model; its rows stay empty), and the rows per value without
    one. SchemaError names the model and the chunk's row."""
    keys = segment_keys(frame[segment_by])
    out = pd.Series([None] * len(frame), dtype=object)
    used = pd.Series([None] * len(frame), dtype=object)
    unknown: dict[str, int] = {}
    for value, rows in frame.groupby(keys, sort=False, dropna=False).indices.items():
        found = None if pd.isna(value) else model(str(value))
        if found is None:
            key = "(missing)" if pd.isna(value) else str(value)
            unknown[key] = unknown.get(key, 0) + len(rows)
            continue
        ref, estimator, schema = found
        try:
            predicted = score_frame(estimator, schema, frame.iloc[rows])[PREDICTION]
        except SchemaError as exc:
            raise exc.of(ref, rows) from None
        out.iloc[rows] = list(predicted)
        used.iloc[rows] = ref
    return pd.DataFrame({PREDICTION: typed(out), MODEL: used}), unknown


def segment_keys(column: pd.Series) -> pd.Series:
    """A segment column as the text values segments were trained on: 8 and 8.0 read as "8";
    missing values stay missing."""
    if pd.api.types.is_float_dtype(column) and bool((column.dropna() % 1 == 0).all()):
        column = column.astype("Int64")
    text = column.astype(object)
    return text.where(text.isna(), text.astype(str))


def typed(values: pd.Series) -> pd.Series:
    """Numbers back to a numeric column (empty rows NaN); labels stay as they are."""
    converted = pd.to_numeric(values, errors="coerce")
    return converted if converted.notna().sum() == values.notna().sum() else values


def to_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def from_parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))
