"""What every benchmark shares: the result types and the measuring helpers.

A benchmark returns a list of :class:`Figure`: one measured quantity (events/s, a
latency, a memory growth), ours and the baselines measured in the same run, each a
:class:`Stat` over several runs (its headline ``value`` is the median unless the figure
says otherwise), the ratios against each baseline, and the targets it is held to.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

__all__ = [
    "CHILD_CWD",
    "Figure",
    "Kind",
    "Progress",
    "Stat",
    "Target",
    "child_command",
    "compare",
    "install_hint",
    "percentile",
    "repeat",
    "runs_for",
    "timed",
]

Kind = Literal["throughput", "latency", "memory", "cost", "overhead"]

RUNS: Final = 5
"""Measured runs per figure (after one warm-up run); the figure is their median."""

QUICK_RUNS: Final = 3
"""Measured runs per figure with ``--quick``."""

Progress = Callable[[str], None]
"""Called by a benchmark with a short description of what it is about to measure."""


CHILD_CWD: Final = Path(__file__).resolve().parents[2]
"""The directory holding the ``trio_agent`` package these modules belong to: the
working directory of the child processes some benchmarks start, so that ``python -m
trio_agent.bench.<name>`` (which puts its working directory first on ``sys.path``)
imports this very package — the installed one, or the checkout's — and not whatever
``trio_agent`` the user's current directory holds."""


def child_command(module: str, *args: str) -> list[str]:
    """The command that runs ``python -m trio_agent.bench.<module> ARGS...`` with the
    interpreter running us; start it with ``cwd=CHILD_CWD``."""
    return [sys.executable, "-m", f"{__package__}.{module}", *args]


def install_hint(extra: str) -> str:
    """What to run to install one of trio-agent's extras."""
    return f"pip install 'trio-agent[{extra}]'"


def runs_for(quick: bool) -> int:
    return QUICK_RUNS if quick else RUNS


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, linearly interpolated."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_percentiles(values: Sequence[float]) -> dict[str, float]:
    """A latency figure's pooled ``percentiles``: p50, p90, p99 and the max of ``values``."""
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
    }


@dataclass(frozen=True)
class Stat:
    """Samples of one measurement (one per run); ``value`` is the headline figure."""

    samples: tuple[float, ...]
    headline: float | None = None  # default: the median of the samples

    @property
    def value(self) -> float:
        return self.headline if self.headline is not None else self.median

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "min": self.min,
            "median": self.median,
            "max": self.max,
            "samples": list(self.samples),
        }


@dataclass(frozen=True)
class Target:
    """What a figure must reach: a ratio against one baseline, or a bound on ours."""

    label: str
    baseline: str | None = None  # compare ``ours / baseline`` with the bounds
    at_least: float | None = None
    at_most: float | None = None

    def met(self, figure: Figure) -> bool | None:
        """True/False, or None when the baseline it names was not measured."""
        if self.baseline is not None:
            ratio = figure.ratios.get(self.baseline)
            if ratio is None:
                return None
            value = ratio
        else:
            value = figure.ours.value
        if self.at_least is not None and not value >= self.at_least:
            return False
        return not (self.at_most is not None and not value <= self.at_most)


@dataclass(frozen=True)
class Figure:
    """One measured quantity: ours, the baselines, their ratios and the targets.

    ``ratios[label]`` is ``ours.value / baselines[label].value`` (for throughput, higher
    is better; for latencies and costs, lower is).  ``percentiles`` holds the pooled
    percentiles of a latency figure; ``series`` holds curves for the plots (for
    memory: ``(events published, MB)`` points per variant).
    """

    benchmark: str
    name: str
    title: str
    unit: str
    kind: Kind
    ours: Stat
    baselines: dict[str, Stat] = field(default_factory=dict)
    higher_is_better: bool = True
    targets: tuple[Target, ...] = ()
    percentiles: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    notes: str = ""

    @property
    def ratios(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, stat in self.baselines.items():
            if stat.value:
                out[label] = self.ours.value / stat.value
        return out

    def verdicts(self) -> list[tuple[Target, bool | None]]:
        return [(t, t.met(self)) for t in self.targets]

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "kind": self.kind,
            "higher_is_better": self.higher_is_better,
            "ours": self.ours.to_dict(),
            "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
            "ratios": self.ratios,
            "targets": [
                {
                    "label": t.label,
                    "baseline": t.baseline,
                    "at_least": t.at_least,
                    "at_most": t.at_most,
                    "met": met,
                }
                for t, met in self.verdicts()
            ],
            "percentiles": self.percentiles,
            "series": {k: [list(p) for p in v] for k, v in self.series.items()},
            "notes": self.notes,
        }


def repeat(measure: Callable[[], float], runs: int, *, warmup: bool = True) -> Stat:
    """Call ``measure`` once to warm up (result discarded), then ``runs`` times; a
    full collection before each call so one run's garbage is not another's cost."""
    if warmup:
        gc.collect()
        measure()
    samples = []
    for _ in range(runs):
        gc.collect()
        samples.append(measure())
    return Stat(tuple(samples))


def compare(
    variants: dict[str, Callable[[], float]], runs: int, *, warmup: bool = True
) -> dict[str, Stat]:
    """Measure several variants round-robin (one warm-up each, then ``runs`` rounds in
    which each variant runs once), so slow drift of the machine hits them all alike."""
    if warmup:
        for measure in variants.values():
            gc.collect()
            measure()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, measure in variants.items():
            gc.collect()
            samples[name].append(measure())
    return {name: Stat(tuple(values)) for name, values in samples.items()}


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes (``perf_counter``)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
