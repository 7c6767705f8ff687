"""Predict a frame: with one model, or each row by its own segment's model of a family
(`FAMILY-VALUE`).

    predict_frame("iris-forest@production", frame, runtime)
    predict_frame("store@production", frame, runtime, segment_by="Store")

Rows whose segment value names no model are left without a prediction and counted.
"""

from __future__ import annotations

import pandas as pd

from producer.serving import MODEL, PREDICTION, Predicted, load_deployed
from producer.spec import segment_model_name
from workers.contracts import CsvDataset
from workers.pipeline.schema import SchemaError
from workers.runtime import Runtime


def predict_frame(ref: str, frame: pd.DataFrame, runtime: Runtime,
                  segment_by: str | None = None) -> Predicted:
    """Predict every row with `ref`, or with `segment_by`: each row with its own segment's
    model of the family `ref` (`FAMILY@ALIAS`, or `FAMILY` for each segment's latest)."""
    if segment_by is None:
        model = load_deployed(ref, runtime)
        values, seen = model.predict_frame(frame)
        return Predicted(frame.assign(**{PREDICTION: values}), seen)
    return predict_segments(ref, frame, runtime, segment_by)


def predict_segments(ref: str, frame: pd.DataFrame, runtime: Runtime, segment_by: str) -> Predicted:
    """Each row with its own segment's model of the family `ref` (`FAMILY@ALIAS`, or `FAMILY`
    for each segment's latest)."""
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
    # By position: a schema error names the row of the whole frame (the file's row), as without segments.
    for value, rows in frame.groupby(keys, sort=False, dropna=False).indices.items():
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
        if not isinstance(dataset, CsvDataset) or dataset.segment_by != segment_by:
            raise ValueError(f"model {model.ref} is not a {segment_by} segment of {family!r}")
        if dataset.segment != str(value):  # another value's model by name ("-1" and "1" are shop-1)
            unknown[str(value)] = len(rows)
            continue
        try:
            predicted, seen = model.predict_frame(frame.iloc[rows])
        except SchemaError as exc:
            raise exc.of(rows=rows) from None
        out.iloc[rows] = list(predicted)
        used.iloc[rows] = model.ref
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
