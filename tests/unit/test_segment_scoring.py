"""The pure parts of `score --segment-by`: routing a chunk's rows, reading a table in chunks,
writing the output a chunk at a time."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LinearRegression

from producer.segment_scoring import _write
from producer.tables import TableError, iter_table
from workers.pipeline.schema import SchemaError
from workers.pipeline.scoring import score_segments, to_parquet
from workers.store import ArtifactStore

SCHEMA = [{"name": "x", "kind": "number", "dtype": "float64"}]


def _model(slope: float) -> Any:
    X = np.arange(4, dtype=float).reshape(-1, 1)
    return LinearRegression().fit(X, slope * X[:, 0])


def test_each_row_is_predicted_by_its_own_segments_model() -> None:
    models = {"1": ("m-1/1", _model(1.0), SCHEMA), "2": ("m-2/3", _model(10.0), SCHEMA)}
    frame = pd.DataFrame({"Store": [2, 1, 7, None, 2.0], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    asked: list[str] = []

    def model(value: str) -> Any:
        asked.append(value)
        return models.get(value)

    scored, unknown = score_segments(frame, "Store", model)

    np.testing.assert_allclose(scored["prediction"].to_numpy(dtype=float), [10.0, 2.0, np.nan, np.nan, 50.0])
    assert scored["model"].tolist() == ["m-2/3", "m-1/1", None, None, "m-2/3"]
    assert unknown == {"7": 1, "(missing)": 1}
    assert sorted(asked) == ["1", "2", "7"]  # once per value (2 and 2.0 are one store)


def test_a_row_that_does_not_fit_names_its_model_and_row_in_the_chunk() -> None:
    frame = pd.DataFrame({"Store": ["1", "2", "1"], "x": [1.0, 2.0, "warm"]})
    models = {"1": ("m-1/1", _model(1.0), SCHEMA), "2": ("m-2/1", _model(2.0), SCHEMA)}
    with pytest.raises(SchemaError) as raised:
        score_segments(frame, "Store", models.get)
    assert raised.value.model == "m-1/1" and raised.value.row == 2 and raised.value.column == "x"


def test_a_table_is_read_in_chunks(tmp_path: Path) -> None:
    frame = pd.DataFrame({"Store": ["08", "9", "10", "08", "9"], "x": range(5)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    for name in ("t.csv", "t.parquet"):
        chunks = list(iter_table(tmp_path / name, 2, ("Store",)))
        assert [len(c) for c in chunks] == [2, 2, 1]
        assert pd.concat(chunks)["Store"].tolist() == ["08", "9", "10", "08", "9"]  # text kept
    (tmp_path / "empty.csv").write_text("Store,x\n")
    with pytest.raises(TableError, match="has no rows"):
        list(iter_table(tmp_path / "empty.csv", 2))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(TableError, match="cannot read"):
        list(iter_table(tmp_path / "bad.parquet", 2))


def test_the_output_widens_a_columns_type_across_chunks(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    inputs = [pd.DataFrame({"n": [1, 2], "s": ["a", None]}),  # int, then a fraction and a gap
              pd.DataFrame({"n": [2.5, np.nan], "s": [None, None]})]
    results = [pd.DataFrame({"prediction": [1.0, 2.0], "model": ["m-1/1", "m-1/1"]}),
               pd.DataFrame({"prediction": [np.nan, np.nan], "model": [None, None]})]
    chunks = [store.put(to_parquet(f)) for f in inputs]
    schemas = [pq.read_schema(io.BytesIO(store.get(c))) for c in chunks]
    _write(tmp_path / "out.parquet", store, chunks, schemas, [store.put(to_parquet(r)) for r in results])
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["n"].tolist()[:3] == [1.0, 2.0, 2.5] and np.isnan(out["n"].iloc[3])
    assert out["s"].tolist()[0] == "a" and out["model"].tolist()[:2] == ["m-1/1", "m-1/1"]
    assert out["prediction"].tolist()[:2] == [1.0, 2.0] and out["prediction"].isna().sum() == 2
