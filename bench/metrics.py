"""Pure figures of a benchmark run: summaries of repeats, efficiency, tail."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Median, min and max of the repeats of one measurement."""

    median: float
    min: float
    max: float
    n: int

    def fmt(self, digits: int = 2) -> str:
        if self.n == 1:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}-{self.max:.{digits}f})"


def summarise(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no values to summarise")
    return Summary(statistics.median(values), min(values), max(values), len(values))


def ideal_time(n: int, k: int, t_chain: float) -> float:
    """The best k workers can do with n chains of t_chain each: ceil(n/k) rounds."""
    if n < 1 or k < 1 or t_chain < 0:
        raise ValueError("need n >= 1, k >= 1 and t_chain >= 0")
    return math.ceil(n / k) * t_chain


def efficiency(wall: float, n: int, k: int, t_chain: float) -> float:
    """Parallel efficiency: the ideal time over the measured one (1.0 is perfect)."""
    if wall <= 0:
        raise ValueError("wall time must be positive")
    return ideal_time(n, k, t_chain) / wall


def tail(finish_times: Sequence[float], fraction: float = 0.95) -> float:
    """Seconds from when `fraction` of the models were done to when all were.

    The fraction-th model is the ceil(fraction * n)-th to finish, so with 64
    models the tail runs from the 61st finish to the 64th.
    """
    if not finish_times:
        raise ValueError("no finish times")
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    ordered = sorted(finish_times)
    index = max(math.ceil(fraction * len(ordered)) - 1, 0)
    return ordered[-1] - ordered[index]


def per_chain_overhead(wall: float, n: int, k: int, t_chain: float) -> float:
    """Extra seconds each chain cost a worker slot beyond its work: (wall * k / n) - t_chain.

    With no-op chains t_chain is the pure stage functions' own cost, so this is
    what the platform (broker, tracking, cache, Celery) adds per chain.
    """
    if n < 1 or k < 1:
        raise ValueError("need n >= 1 and k >= 1")
    return wall * k / n - t_chain
