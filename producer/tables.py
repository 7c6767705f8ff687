"""Reading and writing the tables `predict` and `score` take and give: CSV, Parquet, JSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

READABLE = (".csv", ".parquet", ".pq")
WRITABLE = (".csv", ".parquet", ".pq", ".json")


class TableError(ValueError):
    """A file that cannot be read or written as a table; the message names it."""


def read_table(path: Path, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV or Parquet file (by its suffix; anything else is read as CSV); `text_columns`
    are kept as text (a segment column whose values are "08" stays "08")."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={c: str for c in text_columns} or None)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
        raise TableError(f"cannot read {path} as a table: {exc}") from exc
    if frame.empty:  # a header only: nothing to predict (scikit-learn would say "0 samples")
        raise TableError(f"{path} has no rows")
    return frame


def iter_table(path: Path, chunk_rows: int, text_columns: tuple[str, ...] = ()) -> Iterator[pd.DataFrame]:
    """`read_table`'s frame in chunks of `chunk_rows`, never the whole file in memory: Parquet
    by record batches, CSV by pandas' chunked reader."""
    rows = 0
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            chunks: Iterator[pd.DataFrame] = (
                batch.to_pandas() for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows))
        else:
            chunks = iter(pd.read_csv(path, dtype={c: str for c in text_columns} or None,
                                      chunksize=chunk_rows))
        for chunk in chunks:
            rows += len(chunk)
            yield chunk
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # pyarrow's errors are among these too
        raise TableError(f"cannot read {path} as a table: {exc}") from exc
    if not rows:
        raise TableError(f"{path} has no rows")


def check_writable(path: Path) -> None:
    if path.suffix.lower() not in WRITABLE:
        raise TableError(f"{path}: write .csv, .parquet or .json (got {path.suffix or 'no suffix'!r})")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """By suffix: CSV, Parquet, or JSON (a list of row objects)."""
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records", date_format="iso")
    else:
        frame.to_parquet(path, index=False)
