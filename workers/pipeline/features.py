"""Features from the spec: which column goes to which rule, lags of the target, and the
scikit-learn Pipeline (features + estimator) that is fitted, saved and served as one.

A served model takes raw rows (a DataFrame with the dataset's columns): the
fitted imputers, scalers, encoders and date parts travel inside the model file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from workers.contracts import CsvDataset, FeaturesSpec, ModelSpec
from workers.pipeline.errors import PipelineError


@dataclass(frozen=True)
class ColumnPlan:
    """Each input column's rule; `unused` are the columns no rule uses (reported, not fed)."""

    numeric: list[str]
    categorical: list[str]
    dates: list[str]
    unused: list[str]

    @property
    def inputs(self) -> list[str]:
        return self.numeric + self.categorical + self.dates


def key_columns(model: ModelSpec) -> list[str]:
    """Columns that shape the rows rather than feed the model: segment, time axis, series."""
    ds = model.dataset
    keys = [ds.segment_by if isinstance(ds, CsvDataset) else None, model.split.time_column,
            model.features.lags.by]
    return [k for k in dict.fromkeys(keys) if k is not None]


def plan_columns(frame: pd.DataFrame, model: ModelSpec, extra_numeric: Sequence[str] = ()) -> ColumnPlan:
    """Assign the table's columns to rules; numeric by default is every numeric column left."""
    features, ds = model.features, model.dataset
    columns = [str(c) for c in frame.columns]
    named = {"features.categorical.columns": features.categorical.columns,
             "features.dates.columns": features.dates.columns, "features.drop": features.drop,
             "features.numeric.columns": features.numeric.columns or [],
             "split.time_column": [model.split.time_column] if model.split.time_column else [],
             "features.lags.by": [features.lags.by] if features.lags.by else []}
    for field, wanted in named.items():
        missing = [c for c in wanted if c not in columns]
        if missing:
            shown = columns if len(columns) <= 20 else [*columns[:20], f"... {len(columns) - 20} more"]
            raise PipelineError(field, f"columns {missing[:20]} not in the table; it has {shown}")
    taken = {*features.categorical.columns, *features.dates.columns, *features.drop,
             *key_columns(model), *extra_numeric}
    listed = features.numeric.columns
    field = "features.numeric.columns"
    if listed is None and isinstance(ds, CsvDataset) and ds.features is not None:
        listed, field = [c for c in ds.features if c not in taken], "dataset.features"
    # By dtype: a Series per column cost a small table more than its fit.
    dtypes = dict(zip(columns, frame.dtypes, strict=True))
    if listed is None:
        field = "dataset.features"
        listed = [c for c in columns if c not in taken and _is_number(dtypes[c])]
    for name in listed:
        if not _is_number(dtypes[name]):
            raise PipelineError(field, f"column {name!r} is not numeric; list it under "
                                "features.categorical or features.dates")
        if frame[name].count() == 0:
            raise PipelineError(field, f"column {name!r} has no values (all NaN)")
    numeric = list(listed) + list(extra_numeric)
    if not numeric and not features.categorical.columns and not features.dates.columns:
        raise PipelineError("features", "no feature columns: no numeric column and no rule names one")
    used = {*numeric, *taken}
    return ColumnPlan(numeric, list(features.categorical.columns), list(features.dates.columns),
                      [c for c in columns if c not in used])


def _is_number(column: Any) -> bool:
    """A numeric Series or dtype (bools are not numbers here)."""
    return bool(pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column))


def parse_dates(column: pd.Series, fmt: str | None) -> pd.Series:
    """A column as datetimes: text parsed with `fmt` (ISO dates if unset); numbers left alone."""
    if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column
    return pd.to_datetime(column, format=fmt)


def add_lags(frame: pd.DataFrame, y: np.ndarray, model: ModelSpec,
             target: str) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Lags and rolling means of past targets per series, for rows already in time order.

    A row's values come only from earlier rows of its series (shift before rolling), so no
    future leaks into it; rows without a full history are left out. Returns the rows kept,
    their targets and the new column names.
    """
    lags = model.features.lags
    ds = model.dataset
    series = lags.by or (ds.segment_by if isinstance(ds, CsvDataset) else None)
    past = pd.Series(y, index=frame.index, dtype=float)
    groups = past.groupby(frame[series].to_numpy() if series else np.zeros(len(past)), sort=False)
    new: dict[str, pd.Series] = {}
    for k in lags.periods:
        new[f"{target}_lag_{k}"] = groups.shift(k)
    for w in lags.rolling:
        new[f"{target}_rolling_mean_{w}"] = groups.transform(lambda s, w=w: s.shift(1).rolling(w).mean())
    clash = [c for c in new if c in frame.columns]
    if clash:
        raise PipelineError("features.lags", f"columns {clash} already exist in the table")
    out = frame.assign(**new)
    complete = out[list(new)].notna().all(axis=1).to_numpy()
    if not complete.any():
        raise PipelineError("features.lags", "no row has a full history for these lags")
    return out[complete], y[complete], list(new)


_PARTS = {
    "year": lambda d: d.dt.year, "month": lambda d: d.dt.month, "day": lambda d: d.dt.day,
    "week": lambda d: d.dt.isocalendar().week, "dayofweek": lambda d: d.dt.day_of_week,
    "dayofyear": lambda d: d.dt.day_of_year, "quarter": lambda d: d.dt.quarter,
}


class DateParts(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Date columns (datetimes, or text in `format`) -> numeric parts, one column per part."""

    def __init__(self, parts: Sequence[str] = ("year", "month", "week", "dayofweek"),
                 format: str | None = None) -> None:
        self.parts = parts
        self.format = format

    def fit(self, X: Any, y: Any = None) -> DateParts:
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        frame = pd.DataFrame(X)
        out = []
        for name in frame.columns:
            dates = pd.to_datetime(frame[name], format=self.format)
            for part in self.parts:
                out.append(pd.Series(_PARTS[part](dates)).astype("Float64").to_numpy(float, na_value=np.nan))
        return np.column_stack(out) if out else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray([f"{c}_{p}" for c in names for p in self.parts], dtype=object)


class RawRows(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Raw rows in, the training columns out: a DataFrame's extra columns are ignored and a
    plain array (columns in training order) gets the names, so a served model takes both.
    With `to_array` (a model whose features are all numeric) the rows go on as a float array:
    scikit-learn's per-step DataFrame checks cost a small model more than its fit."""

    def __init__(self, to_array: bool = False) -> None:
        self.to_array = to_array

    def fit(self, X: Any, y: Any = None) -> RawRows:
        self.columns_ = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        return self

    def transform(self, X: Any) -> Any:
        if self.columns_ is None:
            return X
        if hasattr(X, "columns"):
            missing = [c for c in self.columns_ if c not in X.columns]
            if missing:
                raise ValueError(f"rows lack the model's input columns {missing}")
            if not self.to_array:
                return X
            # Selecting the columns costs a small frame ~0.35 ms; the split's own rows need none.
            same = [str(c) for c in X.columns] == self.columns_  # as fit names them
            return (X if same else X[self.columns_]).to_numpy(dtype=float)
        rows = np.asarray(X)
        if rows.ndim != 2 or rows.shape[1] != len(self.columns_):
            raise ValueError(f"expected rows of {len(self.columns_)} columns {self.columns_} "
                             f"(or a DataFrame with them), got shape {rows.shape}")
        return rows.astype(float) if self.to_array else pd.DataFrame(rows, columns=self.columns_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.columns_ or [], dtype=object)


def estimator_prefix(model: ModelSpec) -> str:
    """How the estimator's own params are named inside the model's Pipeline (for a search)."""
    return "estimator__regressor__" if model.features.target_transform != "none" else "estimator__"


def build_model(model: ModelSpec, columns: Sequence[str], estimator: Any) -> Pipeline:
    """The unfitted Pipeline: raw rows, a ColumnTransformer over the input columns (just the
    numeric steps when every input is numeric), then the estimator."""
    features, pre = model.features, model.preprocess
    categorical = [c for c in features.categorical.columns if c in columns]
    dates = [c for c in features.dates.columns if c in columns]
    numeric = [c for c in columns if c not in categorical and c not in dates]
    impute = features.numeric.impute or pre.impute
    scale = features.numeric.scale or pre.scale
    if features.target_transform == "log1p":
        estimator = TransformedTargetRegressor(regressor=estimator, func=np.log1p,
                                               inverse_func=np.expm1, check_inverse=False)
    if not categorical and not dates:  # all numeric: arrays, as cheap as before features existed
        return Pipeline([("rows", RawRows(to_array=True)), ("features", _numeric_steps(impute, scale)),
                         ("estimator", estimator)])
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        parts.append(("numeric", _numeric_steps(impute, scale), numeric))
    if categorical:
        parts.append(("categorical", _encoder(features), categorical))
    if dates:
        date_steps: list[tuple[str, Any]] = [("parts", DateParts(list(features.dates.parts),
                                                                 features.dates.format))]
        if impute != "none":
            date_steps.append(("impute", SimpleImputer(strategy="most_frequent")))
        parts.append(("dates", Pipeline(date_steps), dates))
    transform = ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("rows", RawRows()), ("features", transform), ("estimator", estimator)])


def _numeric_steps(impute: str, scale: str) -> Any:
    steps: list[tuple[str, Any]] = []
    if impute != "none":
        steps.append(("impute", SimpleImputer(strategy=impute)))
    if scale != "none":
        steps.append(("scale", StandardScaler() if scale == "standard" else MinMaxScaler()))
    return Pipeline(steps) if steps else "passthrough"


def _encoder(features: FeaturesSpec) -> Any:
    # Unknown categories at predict time: all zeros (one-hot) or -1 (ordinal), never an error.
    if features.categorical.encode == "onehot":
        return OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    return OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
