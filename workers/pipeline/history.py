"""A lag model serves itself: the last rows of each series travel with the version, and the
lag and rolling features of new rows are built from them (plus the rows' own targets, where
given), in time order, as `features.add_lags` built them for training.

A new row's lag k is the target k steps before it. Where that target is neither stored nor
given (a row too far past the history: the week-6 row of a model whose shortest lag is 4),
the row is refused with a message naming the series, the row and the missing target,
rather than predicted from a guess.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from workers.contracts import CsvDataset, ModelSpec
from workers.pipeline.errors import PipelineError
from workers.pipeline.features import parse_dates

KIND = "lag-history/1"


class HistoryError(ValueError):
    """Rows whose lag features cannot be built from the stored history; names the row."""


def depth(model: ModelSpec) -> int:
    """Rows of each series serving needs: the longest lag or rolling window (0: no lags)."""
    lags = model.features.lags
    return max([*lags.periods, *lags.rolling], default=0)


def series_column(model: ModelSpec) -> str | None:
    ds = model.dataset
    return model.features.lags.by or (ds.segment_by if isinstance(ds, CsvDataset) else None)


def last_rows(frame: pd.DataFrame, y: np.ndarray, model: ModelSpec, target: str) -> dict[str, Any] | None:
    """Each series' last `depth` (time, target) pairs, from rows already in time order (all
    of them, hold-out included: serving continues after the last known week); None without lags."""
    n = depth(model)
    time_column = model.split.time_column
    if n == 0 or time_column is None:
        return None
    series = series_column(model)
    keys = frame[series].astype(str).to_numpy() if series else np.zeros(len(frame), dtype=object)
    times = frame[time_column]
    is_date = bool(pd.api.types.is_datetime64_any_dtype(times))
    out: dict[str, dict[str, list[Any]]] = {}
    for key, rows in pd.Series(np.arange(len(frame))).groupby(keys, sort=True):
        last = rows.to_numpy()[-n:]
        out["" if series is None else str(key)] = {
            "times": [_time_text(t, is_date) for t in times.iloc[last]],
            "y": [float(v) for v in y[last]]}
    lags = model.features.lags
    return {"kind": KIND, "target": target, "time_column": time_column, "series_column": series,
            "dates": is_date, "periods": list(lags.periods), "rolling": list(lags.rolling), "series": out}


def _time_text(value: Any, is_date: bool) -> Any:
    return pd.Timestamp(value).isoformat() if is_date else float(value)


def lag_names(history: dict[str, Any]) -> list[str]:
    """The columns `add_lags` made for training, in its order."""
    target = history["target"]
    return ([f"{target}_lag_{k}" for k in history["periods"]]
            + [f"{target}_rolling_mean_{w}" for w in history["rolling"]])


def with_lags(frame: pd.DataFrame, history: dict[str, Any], date_format: str | None) -> pd.DataFrame:
    """`frame` with its lag columns built from the history (rows of every series after the
    stored ones, in any order); a frame that already has them all is returned as it is."""
    names = lag_names(history)
    if all(n in frame.columns for n in names):
        return frame
    time_column, series = history["time_column"], history["series_column"]
    needed = [c for c in (time_column, series) if c is not None and c not in frame.columns]
    if needed:
        by = " and ".join(c for c in (series, time_column) if c)
        raise HistoryError(f"the rows need column(s) {needed}: the model builds its lag features "
                           f"from the stored history by {by}")
    try:
        times = parse_dates(frame[time_column], date_format) if history["dates"] else frame[time_column]
    except (ValueError, TypeError) as exc:
        raise HistoryError(f"column {time_column!r} does not read as dates: {exc}") from exc
    keys = frame[series].astype(str) if series else pd.Series("", index=frame.index)
    target = history["target"]
    given = (pd.to_numeric(frame[target], errors="coerce") if target in frame.columns
             else pd.Series(np.nan, index=frame.index))
    built = pd.DataFrame(np.nan, index=frame.index, columns=names)
    for key, rows in keys.groupby(keys, sort=False).groups.items():
        stored = history["series"].get(str(key))
        label = f"{series}={key}" if series else "the series"
        if stored is None:
            raise HistoryError(f"no stored history for {label}: the model was not trained on it")
        built.loc[rows] = _series_lags(history, stored, times.loc[rows], given.loc[rows], label)
    return frame.assign(**{n: built[n].to_numpy(dtype=float) for n in names})


def _series_lags(history: dict[str, Any], stored: dict[str, list[Any]], times: pd.Series,
                 given: pd.Series, label: str) -> np.ndarray:
    """One series' lag columns, rows in the order of `times`."""
    past = (pd.to_datetime(pd.Series(stored["times"])) if history["dates"]
            else pd.Series(stored["times"], dtype=float))
    last = past.iloc[-1]
    steps = past.diff().dropna().unique()
    regular = len(steps) == 1
    order = np.argsort(times.to_numpy(), kind="stable")
    positions = np.empty(len(times), dtype=int)
    for rank, i in enumerate(order, 1):
        t = times.iloc[i]
        if not t > last:
            raise HistoryError(f"{label}: the row at {_shown(t)} is not after the stored history "
                               f"(it ends {_shown(last)}); give rows after it")
        if regular:
            ahead = (t - last) / steps[0]
            if float(ahead) != round(float(ahead)):
                raise HistoryError(f"{label}: the row at {_shown(t)} is not a whole number of steps "
                                   f"({_shown(steps[0])}) after the stored history's end {_shown(last)}")
            positions[i] = round(float(ahead))
        else:
            positions[i] = rank
    if len(set(positions.tolist())) < len(positions):
        raise HistoryError(f"{label}: two rows fall on the same step after the stored history")
    # Known targets by position: the stored ones (0 the last, -1 before it, ...) and the given.
    known = {p - len(stored["y"]) + 1: v for p, v in enumerate(stored["y"])}
    known.update({int(p): float(v) for p, v in zip(positions, given.to_numpy(), strict=True)
                  if not np.isnan(v)})
    out = np.empty((len(times), len(history["periods"]) + len(history["rolling"])))
    for i, j in enumerate(positions):
        wanted = [(f"lag {k}", [j - k]) for k in history["periods"]]
        wanted += [(f"rolling mean {w}", list(range(j - w, j))) for w in history["rolling"]]
        for col, (what, sources) in enumerate(wanted):
            missing = [s for s in sources if s not in known]
            if missing:
                raise HistoryError(
                    f"{label}: the row at {_shown(times.iloc[i])} is {j} step(s) past the stored history "
                    f"(it ends {_shown(last)}); its {what} needs the target {j - missing[0]} step(s) "
                    f"before it, which is neither stored nor given in the rows (lags "
                    f"{history['periods']}, rolling {history['rolling']} reach at most "
                    f"{reach(history)} step(s) ahead from the history alone)")
            out[i, col] = float(np.mean([known[s] for s in sources]))
    return out


def reach(history: dict[str, Any]) -> int:
    """How many steps past the history a row can be with no targets given."""
    return min([*history["periods"], *([1] if history["rolling"] else [])])


def _shown(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    if isinstance(value, pd.Timedelta):
        return f"{value.days} days" if value == pd.Timedelta(days=value.days) else str(value)
    return str(value)


def check_history(history: Any) -> dict[str, Any]:
    """A stored history as written by `last_rows` (a version's artifact, read back)."""
    if not isinstance(history, dict) or history.get("kind") != KIND:
        raise PipelineError("features.lags", "the version's stored history is not a lag history")
    return history
