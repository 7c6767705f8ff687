"""A model's input schema: recorded from its training columns, checked on the rows it predicts.

The schema is plain JSON (column name, kind, training dtype and, for text columns
with few values, the categories seen), so it lives in the version's record and
the check needs no model file. A mismatch names the column; a category unseen
in training is a note, not an error (the encoders ignore it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# Text columns with more distinct values than this record no category list (ids, free text).
MAX_CATEGORIES = 200


class SchemaError(ValueError):
    """Rows that do not fit the model's input schema; `column` names the first culprit and,
    where one value is wrong, `row` is its position in the rows checked (0-based)."""

    def __init__(self, column: str, rule: str, model: str | None = None, row: int | None = None,
                 value: Any = None, count: int = 1) -> None:
        self.column, self.rule, self.model = column, rule, model
        # numpy scalars as Python's: shown as `inf`, not `np.float64(inf)`
        self.value = value.item() if isinstance(value, np.generic) else value
        self.row, self.count = row, count
        super().__init__(f"{f'model {model}, ' if model else ''}column {column!r}: {self.reason}")

    @property
    def reason(self) -> str:
        if self.row is None:
            return self.rule
        return f"{self.rule}; row {self.row + 1} has {self.value!r} ({self.count} such row(s))"

    def of(self, model: str | None = None, rows: Any = None) -> SchemaError:
        """The same error for `model`, its row renumbered by `rows` (the position, in the
        caller's frame, of each row checked): segment predict names the file's row."""
        row = self.row if rows is None or self.row is None else int(rows[self.row])
        return SchemaError(self.column, self.rule, model or self.model, row, self.value, self.count)


def input_schema(frame: pd.DataFrame, date_format: str | None = None) -> list[dict[str, Any]]:
    """One entry per input column, in the order the model takes them; `date_format` (strftime)
    is how text dates read (the spec's, so "05-02-2010" is never taken for May 2nd)."""
    out = []
    for name, column in frame.items():
        entry: dict[str, Any] = {"name": str(name), "kind": _kind(column), "dtype": str(column.dtype)}
        if entry["kind"] == "datetime" and date_format is not None:
            entry["format"] = date_format
        if entry["kind"] == "text":
            values = column.dropna().astype(str).unique()
            if len(values) <= MAX_CATEGORIES:
                entry["categories"] = sorted(values.tolist())
        out.append(entry)
    return out


def _kind(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "bool"
    if pd.api.types.is_numeric_dtype(column):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime"
    return "text"


def check_frame(frame: pd.DataFrame, schema: list[dict[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """The schema's columns of `frame`, in order and in the training types, and notes (unseen
    categories); SchemaError for a missing column or a value of the wrong type."""
    missing = [c["name"] for c in schema if c["name"] not in frame.columns]
    if missing:
        raise SchemaError(missing[0], f"missing from the input; the model takes "
                          f"{[c['name'] for c in schema]} (missing: {missing})")
    columns, notes = {}, []
    for entry in schema:
        name, kind = entry["name"], entry["kind"]
        column = frame[name]
        columns[name] = _coerce(column, entry)
        if kind == "text" and "categories" in entry:
            seen = columns[name].dropna()
            unseen = seen[~seen.isin(entry["categories"])]
            if len(unseen):
                examples = sorted(unseen.unique().tolist())[:5]
                notes.append(f"column {name!r}: {len(unseen)} row(s) with categories unseen in "
                             f"training, e.g. {examples}")
    return pd.DataFrame(columns, index=frame.index), notes


def _coerce(column: pd.Series, entry: dict[str, Any]) -> pd.Series:
    """The column in its training kind; SchemaError naming a value that does not convert."""
    kind, name = entry["kind"], entry["name"]
    if kind == "number":
        if pd.api.types.is_numeric_dtype(column):
            converted = column.astype(float) if pd.api.types.is_bool_dtype(column) else column
        else:
            converted = pd.to_numeric(column, errors="coerce")
            _refuse_lost(column, converted, name, f"must be numeric ({entry['dtype']} in training)")
        _refuse_infinite(column, converted, name)
        return converted
    if kind == "bool":
        if pd.api.types.is_bool_dtype(column):
            return column
        truth = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
        converted = column.astype(str).str.strip().str.lower().map(truth)
        _refuse_lost(column, converted, name, "must be true/false")
        return converted.astype(bool)
    if kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(column):
            return column
        converted = pd.to_datetime(column, errors="coerce", format=entry.get("format"))
        fmt = entry.get("format")
        _refuse_lost(column, converted, name, f"must be dates{f' in format {fmt!r}' if fmt else ''}")
        return converted
    # text: numbers read from a CSV ("1", "2") are the same categories as text
    text = column.astype(object)
    return text.where(text.isna(), text.astype(str))


def _refuse_lost(before: pd.Series, after: pd.Series, name: str, rule: str) -> None:
    # A blank cell is a missing value (the imputer's business), not a wrong one.
    given = before.notna() & (before.astype(str).str.strip() != "")
    lost = after.isna().to_numpy() & given.to_numpy()
    if lost.any():
        row = int(np.flatnonzero(lost)[0])
        raise SchemaError(name, rule, row=row, value=before.iloc[row], count=int(lost.sum()))


def _refuse_infinite(before: pd.Series, after: pd.Series, name: str) -> None:
    # scikit-learn refuses inf too, but for the whole input, naming no column.
    infinite = np.isinf(after.to_numpy(dtype=float, na_value=np.nan))
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise SchemaError(name, "must be a finite number", row=row, value=before.iloc[row],
                          count=int(infinite.sum()))


def model_input(frame: pd.DataFrame, estimator: Any) -> Any:
    """What the estimator takes: the frame if it was fitted on named columns, else its values."""
    return frame if hasattr(estimator, "feature_names_in_") else frame.to_numpy()
