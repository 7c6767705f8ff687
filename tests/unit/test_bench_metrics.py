"""The benchmark's pure figures (the benchmark itself is not a test)."""

from __future__ import annotations

import pytest

from bench.metrics import efficiency, ideal_time, per_chain_overhead, summarise, tail


def test_ideal_time_rounds_up_to_whole_rounds() -> None:
    assert ideal_time(64, 8, 1.0) == 8.0
    assert ideal_time(65, 8, 1.0) == 9.0
    assert ideal_time(3, 16, 0.5) == 0.5


def test_efficiency_is_ideal_over_measured() -> None:
    assert efficiency(8.0, 64, 8, 1.0) == pytest.approx(1.0)
    assert efficiency(10.0, 64, 8, 1.0) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        efficiency(0.0, 64, 8, 1.0)


def test_tail_runs_from_the_95th_percentile_finish_to_the_last() -> None:
    finishes = [float(i) for i in range(1, 65)]  # model i done at second i
    # ceil(0.95 * 64) = 61st finish at 61 s; the last at 64 s.
    assert tail(finishes) == pytest.approx(3.0)
    assert tail([5.0, 1.0, 3.0]) == pytest.approx(0.0)  # ceil(2.85) = 3rd: the last itself
    assert tail([1.0, 2.0, 4.0], fraction=0.5) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        tail([])


def test_summary_median_min_max() -> None:
    s = summarise([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 10.0, 4)
    assert summarise([1.234]).fmt() == "1.23"
    assert s.fmt(1) == "2.5 (1.0-10.0)"


def test_per_chain_overhead_is_slot_time_beyond_the_work() -> None:
    # 100 chains on 2 slots in 1 s: each chain held a slot 20 ms; the work itself took 5 ms.
    assert per_chain_overhead(1.0, 100, 2, 0.005) == pytest.approx(0.015)
