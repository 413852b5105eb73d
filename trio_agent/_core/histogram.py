"""``Histogram``: counts of observed values in fixed buckets, for ``statistics()``.

What the runtime and the server count as distributions (tool durations, publish-to-send
latency) is kept here, as a Prometheus histogram keeps it — a count per bucket and a
sum — so that ``statistics()`` can hand out a snapshot and a scrape can expose it with
nothing observed twice.  Sans-I/O: the caller measures, this only counts.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

import attrs

__all__ = ["Histogram", "HistogramSnapshot"]


@attrs.frozen(slots=True)
class HistogramSnapshot:
    """A histogram at one moment: ``counts[i]`` values were ``<= bounds[i]`` (and over
    the bound before), ``counts[-1]`` over the last bound; ``sum`` of them all."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, values <= it)`` per bucket, the last bound ``inf``: the
        Prometheus form."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class Histogram:
    """Counts of values in the buckets ``bounds`` (increasing upper bounds; one more
    bucket above the last)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        if not self.bounds or any(not math.isfinite(b) for b in self.bounds):
            raise ValueError(f"histogram bounds must be finite numbers, got {self.bounds}")
        if any(a >= b for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"histogram bounds must increase, got {self.bounds}")
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.bounds, tuple(self.counts), self.sum)
