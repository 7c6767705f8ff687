"""The input schema: recorded from training columns, checked on the rows a model predicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from producer.segments import segment_keys
from producer.tables import TableError, read_table, write_table
from workers.pipeline.schema import MAX_CATEGORIES, SchemaError, check_frame, input_schema

TRAIN = pd.DataFrame({"size": [1.5, 2.0, np.nan], "kind": ["a", "b", "a"], "open": [True, False, True],
                      "day": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"])})


def test_schema_records_kinds_dtypes_and_categories() -> None:
    assert input_schema(TRAIN) == [
        {"name": "size", "kind": "number", "dtype": "float64"},
        {"name": "kind", "kind": "text", "dtype": TRAIN["kind"].dtype.name, "categories": ["a", "b"]},
        {"name": "open", "kind": "bool", "dtype": "bool"},
        {"name": "day", "kind": "datetime", "dtype": str(TRAIN["day"].dtype)}]
    many = pd.DataFrame({"id": [f"x{i}" for i in range(MAX_CATEGORIES + 1)]})
    assert "categories" not in input_schema(many)[0]


def test_rows_are_converted_to_the_training_kinds_in_schema_order() -> None:
    rows = pd.DataFrame({"extra": [0, 0], "day": ["2024-02-01", "2024-02-02"], "open": ["true", "0"],
                         "kind": ["b", "z"], "size": ["3", ""]})
    checked, notes = check_frame(rows, input_schema(TRAIN))
    assert list(checked.columns) == ["size", "kind", "open", "day"]
    assert checked["size"].tolist()[0] == 3.0 and np.isnan(checked["size"].tolist()[1])
    assert checked["open"].tolist() == [True, False]
    assert checked["day"].dt.day.tolist() == [1, 2]
    assert notes == ["column 'kind': 1 row(s) with categories unseen in training, e.g. ['z']"]
    # numbers read from a file are the same categories as text
    coded = check_frame(pd.DataFrame({"c": [1, 2]}), [{"name": "c", "kind": "text", "dtype": "object",
                                                       "categories": ["1", "2"]}])
    assert coded[0]["c"].tolist() == ["1", "2"] and coded[1] == []


def test_text_dates_read_in_the_recorded_format() -> None:
    schema = input_schema(TRAIN[["day"]], date_format="%d-%m-%Y")
    assert schema[0]["format"] == "%d-%m-%Y"
    checked, _ = check_frame(pd.DataFrame({"day": ["05-02-2010"]}), schema)
    assert (checked["day"].dt.month.tolist(), checked["day"].dt.day.tolist()) == ([2], [5])
    with pytest.raises(SchemaError, match="must be dates in format '%d-%m-%Y'; row 1 has '2010-02-05'"):
        check_frame(pd.DataFrame({"day": ["2010-02-05"]}), schema)


@pytest.mark.parametrize(("rows", "column", "reason"), [
    (TRAIN.drop(columns="open"), "open", "missing from the input"),
    (TRAIN.assign(size=["1", "big", "2"]), "size", "must be numeric (float64 in training); row 2 has 'big'"),
    (TRAIN.assign(open=["yes", "no", "yes"]), "open", "must be true/false; row 1 has 'yes' (3 such row(s))"),
    (TRAIN.assign(day=["2024-01-01", "someday", None]), "day", "must be dates; row 2 has 'someday'"),
])
def test_a_mismatch_names_the_column(rows: pd.DataFrame, column: str, reason: str) -> None:
    with pytest.raises(SchemaError, match=f"column '{column}': .*") as raised:
        check_frame(rows, input_schema(TRAIN))
    assert raised.value.column == column and reason in raised.value.reason


@pytest.mark.parametrize("given", [np.inf, -np.inf, "inf", "-Infinity"])
def test_an_infinite_number_is_refused_naming_the_column_and_row(given: object) -> None:
    # scikit-learn refuses it too, but for the whole input, naming no column (issue 19, case 9).
    rows = TRAIN.astype({"size": object}).assign(open=[True, True, False])
    rows.loc[2, "size"] = given
    if isinstance(given, float):
        rows = rows.astype({"size": float})
    with pytest.raises(SchemaError) as raised:
        check_frame(rows, input_schema(TRAIN))
    assert (raised.value.column, raised.value.row) == ("size", 2)
    assert f"column 'size': must be a finite number; row 3 has {given!r} (1 such row(s))" in str(raised.value)


def test_a_schema_error_is_renumbered_to_the_callers_rows() -> None:
    with pytest.raises(SchemaError) as raised:
        check_frame(TRAIN.assign(size=["1", "big", "2"]), input_schema(TRAIN))
    moved = raised.value.of("m/1", rows=np.array([3, 7, 9]))
    assert str(moved) == ("model m/1, column 'size': must be numeric (float64 in training); "
                          "row 8 has 'big' (1 such row(s))")
    assert raised.value.of().row == 1 and SchemaError("c", "missing").of(rows=[5]).row is None


def test_segment_values_read_as_the_text_segments_were_trained_on() -> None:
    assert segment_keys(pd.Series([8, 12])).tolist() == ["8", "12"]
    keys = segment_keys(pd.Series([8.0, np.nan]))
    assert keys[0] == "8" and pd.isna(keys[1])
    assert segment_keys(pd.Series(["08", "B"])).tolist() == ["08", "B"]


def test_tables_by_suffix(tmp_path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    for name in ("t.csv", "t.parquet", "t.json"):
        write_table(frame, tmp_path / name)
    assert read_table(tmp_path / "t.parquet").equals(frame)
    assert read_table(tmp_path / "t.csv", ("a",))["a"].tolist() == ["1", "2"]
    assert pd.read_json(tmp_path / "t.json").equals(frame)
    with pytest.raises(TableError, match="write .csv, .parquet or .json"):
        write_table(frame, tmp_path / "t.xlsx")
    (tmp_path / "header.csv").write_text("a,b\n")
    frame.head(0).to_parquet(tmp_path / "header.parquet")
    for name in ("header.csv", "header.parquet"):  # scikit-learn would say "0 samples"
        with pytest.raises(TableError, match=f"{name} has no rows$"):
            read_table(tmp_path / name)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(TableError, match="cannot read .*broken.parquet"):
        read_table(tmp_path / "broken.parquet")
