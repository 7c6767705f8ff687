"""Score a chunk of rows with a fitted model: the pure part of the `score` task."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from workers.pipeline.schema import check_frame, model_input

PREDICTION = "prediction"


def score_frame(estimator: Any, schema: list[dict[str, Any]] | None, frame: pd.DataFrame) -> pd.DataFrame:
    """One `prediction` column for the frame's rows, checked against the schema if there is one."""
    rows = frame if schema is None else check_frame(frame, schema)[0]
    X = model_input(rows, estimator) if schema is not None else rows.to_numpy()
    return pd.DataFrame({PREDICTION: estimator.predict(X)})


def to_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def from_parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))
