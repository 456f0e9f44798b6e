"""How a measured figure is summarised and labelled: repeats as median and range, percentiles,
and whether the load generators (not the server) were the limit.

Pure functions of the numbers, so they can be unit-tested without running anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

REPEATS = 3  # every per-packet figure is measured this many times
SATURATED = 0.90  # generators above this share of their cores' capacity limit the figure
REAL_TIME_DELIVERED = 0.99  # at least this share of the packets due reached the devices
REAL_TIME_LATE_PCT = 0.5  # and at most this share of them arrived more than 50 ms late


@dataclass(frozen=True)
class Spread:
    """Repeats of one figure: the median and the range they span."""

    median: float
    low: float
    high: float
    count: int

    def show(self, digits: int = 1, unit: str = "") -> str:
        """``41.2 us (40.1-43.0, 3 runs)``; a single value is shown alone."""
        value = f"{self.median:.{digits}f}{unit}"
        if self.count < 2:
            return value
        return f"{value} ({self.low:.{digits}f}-{self.high:.{digits}f}, {self.count} runs)"


def spread(values: Sequence[float]) -> Spread:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return Spread(math.nan, math.nan, math.nan, 0)
    return Spread(statistics.median(finite), min(finite), max(finite), len(finite))


def percentile(values: Sequence[float], q: float) -> float:
    """The value at quantile ``q`` (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ratio(value: float, floor: float) -> float:
    return value / floor if floor > 0 and math.isfinite(floor) else math.nan


def generator_bound(cpu_pct: float, cores: int, processes: int) -> bool:
    """True when the generators used more than 90 % of what they can use: one core per process,
    at most as many as they are pinned to. ``cpu_pct`` is their total, in % of one core."""
    capacity = 100.0 * max(1, min(cores, processes))
    return cpu_pct > SATURATED * capacity


def is_real_time(delivered: float, due: float, late_pct: float) -> bool:
    return due > 0 and delivered >= REAL_TIME_DELIVERED * due and late_pct < REAL_TIME_LATE_PCT


def verdict(delivered: float, due: float, late_pct: float, bound: bool) -> str:
    """``real time``; ``NOT real time``; or, when the generators were saturated, that the figure
    is theirs: a shortfall then says nothing about the server."""
    if is_real_time(delivered, due, late_pct):
        return "real time" + (" (generator-bound)" if bound else "")
    return "generator-bound" if bound else "NOT real time"


def processes(count: int) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


def overload(due: float, delivered: float, failed: int) -> str:
    """``delivered 18,200 of 20,000 packets/s due (91.0 %), 3 connects failed``."""
    share = 100 * delivered / due if due > 0 else math.nan
    text = f"delivered {delivered:,.0f} of {due:,.0f} packets/s due ({share:.1f} %)"
    return text + (f", {failed} connects failed" if failed else "")
