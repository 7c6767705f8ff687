"""A lag model's stored history and the lag features serving builds from it: pure functions,
checked against `add_lags` on the whole table (the lags training would have computed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.unit.test_features import shop_table, spec
from workers.contracts import ModelSpec
from workers.pipeline.features import add_lags
from workers.pipeline.history import HistoryError, lag_names, last_rows, with_lags


def lag_model(periods: list[int], rolling: list[int]) -> ModelSpec:
    return spec(dataset={"kind": "csv", "path": "x.csv", "target": "sales", "segment_by": "shop"},
                split={"kind": "time", "time_column": "week", "test_size": 0.2},
                features={"numeric": {"columns": ["price"]},
                          "lags": {"periods": periods, "rolling": rolling}})


def ordered(n_weeks: int) -> tuple[pd.DataFrame, np.ndarray]:
    table = shop_table(n_weeks)
    order = np.argsort(table.frame["week"].to_numpy(), kind="stable")
    return table.frame.iloc[order].reset_index(drop=True), table.y[order]


def test_lags_from_the_history_equal_the_lags_of_the_whole_table() -> None:
    # Given a model with lags 4 and 6 whose history ends 4 weeks before the table does
    model = lag_model([4, 6], [])
    frame, y = ordered(30)
    cut = frame["week"] < frame["week"].max() - pd.Timedelta(weeks=3)
    history = last_rows(frame[cut].reset_index(drop=True), y[cut.to_numpy()], model, "sales")
    assert history is not None and len(history["series"]["a"]["y"]) == 6

    # When the last 4 weeks' rows come without their targets, shuffled
    new = frame[~cut].sample(frac=1.0, random_state=1)
    built = with_lags(new, history, None)

    # Then their lags are those of the whole table, row by row
    truth, _, names = add_lags(frame, y, model, "sales")
    expected = truth.loc[new.index, names]
    assert names == lag_names(history)
    np.testing.assert_allclose(built[names].to_numpy(), expected.to_numpy())
    assert list(built.index) == list(new.index)


def test_a_row_past_the_reach_of_the_history_is_refused_unless_the_targets_are_given() -> None:
    model = lag_model([2], [3])
    frame, y = ordered(20)
    cut = frame["week"] <= frame["week"].iloc[-1] - pd.Timedelta(weeks=3)
    history = last_rows(frame[cut].reset_index(drop=True), y[cut.to_numpy()], model, "sales")
    later = frame[~cut & (frame["shop"] == "a")]  # 3 weeks of shop a
    with pytest.raises(HistoryError, match=r"shop=a: the row at .* is 2 step\(s\) past the stored history"):
        with_lags(later, history, None)
    # With the targets of the earlier new rows given (labelled rows), every lag is known.
    labelled = later.assign(sales=y[later.index])
    truth, _, names = add_lags(frame, y, model, "sales")
    np.testing.assert_allclose(with_lags(labelled, history, None)[names].to_numpy(),
                               truth.loc[later.index, names].to_numpy())
    # A row at or before the history's end, or of an unknown series, is refused too.
    with pytest.raises(HistoryError, match="not after the stored history"):
        with_lags(frame[cut].tail(1), history, None)
    with pytest.raises(HistoryError, match="no stored history for shop=z"):
        with_lags(later.assign(shop="z"), history, None)
