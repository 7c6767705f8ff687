"""Load datasets into numeric arrays: shipped scikit-learn sets, synthetic, CSV."""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.contracts import CsvDataset, Dataset, SklearnDataset, SyntheticDataset
from workers.pipeline.errors import PipelineError

_MISSING = {"", "na", "nan", "null", "none"}


@dataclass(frozen=True)
class Table:
    """Features, target and feature names of one model's data."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]


def load_dataset(spec: Dataset, task: str, data_root: Path) -> Table:
    # scikit-learn is imported here, not at the top: producer commands that never load
    # data (status, runs, cancel) then start without it (about 1.5 s).
    from sklearn import datasets as skdatasets

    if isinstance(spec, SklearnDataset):
        bunch = getattr(skdatasets, f"load_{spec.name}")()
        names = [str(n) for n in getattr(bunch, "feature_names", range(bunch.data.shape[1]))]
        return Table(np.asarray(bunch.data, dtype=float), np.asarray(bunch.target), names)
    if isinstance(spec, SyntheticDataset):
        return _synthetic(spec, task)
    return load_csv(spec, task, data_root)


def _synthetic(spec: SyntheticDataset, task: str) -> Table:
    from sklearn import datasets as skdatasets

    if task == "classification":
        X, y = skdatasets.make_classification(
            n_samples=spec.n_samples, n_features=spec.n_features,
            n_informative=spec.n_informative, n_redundant=0, n_classes=spec.n_classes,
            random_state=spec.seed,
        )
    else:
        X, y = skdatasets.make_regression(
            n_samples=spec.n_samples, n_features=spec.n_features,
            n_informative=spec.n_informative, noise=spec.noise, random_state=spec.seed,
        )
    return Table(X, y, [f"x{i}" for i in range(spec.n_features)])


def resolve_csv_path(data_root: Path, path: str) -> Path:
    """The CSV's real path, refusing anything that escapes the data root."""
    if Path(path).is_absolute():
        raise PipelineError("dataset.path", f"{path!r} must be relative to the data root")
    root = data_root.resolve()
    # resolve() follows symlinks, so a link pointing outside the root is caught too.
    full = (root / path).resolve()
    if not full.is_relative_to(root):
        raise PipelineError("dataset.path", f"{path!r} escapes the data root {str(root)!r}")
    if not full.is_file():
        raise PipelineError("dataset.path", f"{path!r} not found under the data root {str(root)!r}")
    return full


def read_csv(path: Path) -> dict[str, list[str]]:
    """Columns of a CSV file as lists of strings, in file order."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise PipelineError("dataset.path", f"{path.name!r} is empty")
        columns: dict[str, list[str]] = {name: [] for name in header}
        for row in reader:
            for name, value in zip(header, row, strict=False):
                columns[name].append(value)
    return columns


def to_float(values: list[str]) -> np.ndarray | None:
    """Parse a column as floats (missing -> NaN); None if any value is not numeric."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        s = v.strip()
        if s.lower() in _MISSING:
            out[i] = math.nan
            continue
        try:
            out[i] = float(s)
        except ValueError:
            return None
    return out


def feature_columns(spec: CsvDataset, columns: dict[str, list[str]],
                    floats: dict[str, np.ndarray | None] | None = None) -> list[str]:
    """Named features, or every numeric column but the target and the segment column."""
    if spec.target not in columns:
        raise PipelineError("dataset.target", f"column {spec.target!r} not in {sorted(columns)}")
    if spec.segment_by is not None and spec.segment_by not in columns:
        raise PipelineError("dataset.segment_by", f"column {spec.segment_by!r} not in the file")
    if spec.features is not None:
        missing = [f for f in spec.features if f not in columns]
        if missing:
            raise PipelineError("dataset.features", f"columns {missing} not in the file")
        names = list(spec.features)
    else:
        skip = {spec.target, spec.segment_by}
        parsed = floats if floats is not None else {c: to_float(v) for c, v in columns.items()}
        names = [c for c in columns if c not in skip and parsed[c] is not None]
    if not names:
        raise PipelineError("dataset.features", "no numeric feature columns")
    return names


@dataclass(frozen=True)
class ParsedCsv:
    """A CSV file's columns as text and, where every value parses, as floats."""

    text: dict[str, list[str]]
    floats: dict[str, np.ndarray | None]


@functools.lru_cache(maxsize=8)
def _parse_csv(path: Path, mtime_ns: int, size: int) -> ParsedCsv:
    columns = read_csv(path)
    return ParsedCsv(columns, {name: to_float(values) for name, values in columns.items()})


def parsed_csv(path: Path) -> ParsedCsv:
    """The file parsed once per process: 45 segment models of one table parse it once.

    Keyed by modification time and size, so an edited file is read again.
    """
    stat = path.stat()
    return _parse_csv(path, stat.st_mtime_ns, stat.st_size)


def load_csv(spec: CsvDataset, task: str, data_root: Path) -> Table:
    parsed = parsed_csv(resolve_csv_path(data_root, spec.path))
    columns = parsed.text
    names = feature_columns(spec, columns, parsed.floats)
    rows = np.arange(len(columns[spec.target]))
    if spec.segment_by is not None and spec.segment is not None:
        rows = np.flatnonzero(np.asarray(columns[spec.segment_by]) == spec.segment)
        if rows.size == 0:
            raise PipelineError("dataset.segment", f"no rows where {spec.segment_by} == {spec.segment!r}")
    feats = []
    for name in names:
        col = parsed.floats[name]
        if col is None:
            raise PipelineError("dataset.features", f"column {name!r} is not numeric")
        col = col[rows]
        if np.isnan(col).all():
            raise PipelineError("dataset.features", f"column {name!r} has no values (all NaN)")
        feats.append(col)
    X = np.column_stack(feats)
    target_raw = [columns[spec.target][i] for i in rows]
    all_y = parsed.floats[spec.target]
    y_num = None if all_y is None else all_y[rows]
    if task == "regression":
        if y_num is None or np.isnan(y_num).any():
            raise PipelineError("dataset.target", f"column {spec.target!r} must be numeric and complete")
        y: np.ndarray = y_num
    else:
        y = np.asarray(target_raw) if y_num is None else y_num
    return Table(X, y, names)


def inspect_csv(spec: CsvDataset, data_root: Path) -> list[str]:
    """Check a CSV spec against its file once; return the distinct segment values (if any)."""
    columns = read_csv(resolve_csv_path(data_root, spec.path))
    for name in feature_columns(spec, columns):
        col = to_float(columns[name])
        if col is None:
            raise PipelineError("dataset.features", f"column {name!r} is not numeric")
        if np.isnan(col).all():
            raise PipelineError("dataset.features", f"column {name!r} has no values (all NaN)")
    if spec.segment_by is None:
        return []
    return list(dict.fromkeys(columns[spec.segment_by]))
