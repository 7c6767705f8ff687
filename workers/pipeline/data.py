"""Load datasets as tables: shipped scikit-learn sets, synthetic, CSV and Parquet files.

A table keeps the file's real dtypes (numbers, text, dates stay text until the
features say how to read them); which columns become features is decided by
`workers.pipeline.features`, which reports the columns no rule uses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workers.contracts import CsvDataset, Dataset, SklearnDataset, SyntheticDataset
from workers.pipeline.errors import PipelineError


@dataclass(frozen=True)
class Table:
    """One model's rows: every column but the target, and the target."""

    frame: pd.DataFrame
    y: np.ndarray

    @property
    def feature_names(self) -> list[str]:
        return [str(c) for c in self.frame.columns]


def load_dataset(spec: Dataset, task: str, data_root: Path) -> Table:
    # scikit-learn is imported here, not at the top: producer commands that never load
    # data (status, runs, cancel) then start without it (about 1.5 s).
    from sklearn import datasets as skdatasets

    if isinstance(spec, SklearnDataset):
        bunch = getattr(skdatasets, f"load_{spec.name}")()
        names = [str(n) for n in getattr(bunch, "feature_names", range(bunch.data.shape[1]))]
        return Table(pd.DataFrame(np.asarray(bunch.data, dtype=float), columns=names),
                     np.asarray(bunch.target))
    if isinstance(spec, SyntheticDataset):
        return _synthetic(spec, task)
    return load_file(spec, task, data_root)


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
    return Table(pd.DataFrame(X, columns=[f"x{i}" for i in range(spec.n_features)]), y)


def resolve_csv_path(data_root: Path, path: str) -> Path:
    """The file's real path, refusing anything that escapes the data root."""
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


@functools.lru_cache(maxsize=8)
def _read(path: Path, kind: str, segment_by: str | None, mtime_ns: int, size: int) -> pd.DataFrame:
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            # The segment column as text, as written: its values become model names.
            frame = pd.read_csv(path, converters={segment_by: str} if segment_by else None)
    except pd.errors.EmptyDataError as exc:
        raise PipelineError("dataset.path", f"{path.name!r} is empty") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise PipelineError("dataset.path", f"cannot read {path.name!r} as {kind}: {exc}") from exc
    if segment_by is not None and segment_by in frame.columns:
        frame[segment_by] = frame[segment_by].astype(object).where(frame[segment_by].notna(), "")
        frame[segment_by] = frame[segment_by].map(str)
    return frame


@functools.lru_cache(maxsize=8)
def _segment_rows(path: Path, kind: str, segment_by: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    frame = _read(path, kind, segment_by, mtime_ns, size)
    if segment_by not in frame.columns:
        return {}
    return {str(k): v for k, v in frame.groupby(segment_by, sort=False).indices.items()}


def segment_rows(spec: CsvDataset, data_root: Path) -> dict[str, np.ndarray]:
    """Row positions of each segment value, found once per file and process (45 store
    models of one table: one groupby instead of 45 comparisons over the whole column)."""
    assert spec.segment_by is not None
    path = resolve_csv_path(data_root, spec.path)
    stat = path.stat()
    return _segment_rows(path, spec.kind, spec.segment_by, stat.st_mtime_ns, stat.st_size)


def read_table(spec: CsvDataset, data_root: Path) -> pd.DataFrame:
    """The whole file, read once per process: 45 segment models of one table read it once.

    Keyed by modification time and size, so an edited file is read again. Callers
    must not modify the frame in place (it is shared).
    """
    path = resolve_csv_path(data_root, spec.path)
    stat = path.stat()
    return _read(path, spec.kind, spec.segment_by, stat.st_mtime_ns, stat.st_size)


def _check_columns(spec: CsvDataset, frame: pd.DataFrame) -> None:
    columns = [str(c) for c in frame.columns]
    if spec.target not in columns:
        raise PipelineError("dataset.target", f"column {spec.target!r} not in {sorted(columns)}")
    if spec.segment_by is not None and spec.segment_by not in columns:
        raise PipelineError("dataset.segment_by", f"column {spec.segment_by!r} not in the file")
    missing = [f for f in spec.features or [] if f not in columns]
    if missing:
        raise PipelineError("dataset.features", f"columns {missing} not in the file")


def load_file(spec: CsvDataset, task: str, data_root: Path) -> Table:
    frame = read_table(spec, data_root)
    _check_columns(spec, frame)
    if spec.segment_by is not None and spec.segment is not None:
        rows = segment_rows(spec, data_root).get(spec.segment)
        if rows is None:
            raise PipelineError("dataset.segment", f"no rows where {spec.segment_by} == {spec.segment!r}")
        frame = frame.take(rows)
    target = frame[spec.target]
    if task == "regression" and (not pd.api.types.is_numeric_dtype(target) or target.isna().any()):
        raise PipelineError("dataset.target", f"column {spec.target!r} must be numeric and complete")
    y = target.to_numpy(dtype=float if task == "regression" else None)
    if y.dtype.kind not in "biuf":  # text labels: plain Python strings, as the file had them
        y = y.astype(object)
    return Table(frame.drop(columns=[spec.target]).reset_index(drop=True), y)


def inspect_csv(spec: CsvDataset, data_root: Path) -> list[str]:
    """Check a file spec against its file once; return the distinct segment values (if any)."""
    frame = read_table(spec, data_root)
    _check_columns(spec, frame)
    if spec.segment_by is None:
        return []
    return list(dict.fromkeys(frame[spec.segment_by].tolist()))
