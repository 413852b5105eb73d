"""The benchmark suite behind ``trio-agent bench`` (timings live here, never in tests).

Each module in :data:`BENCHMARKS` exposes ``run(quick: bool) -> list[Figure]`` (see
:mod:`benchmarks._common`).  Every figure is measured against its baselines in the same
process, in the same run, on the same machine, and quoted as the median of several runs
after a warm-up.  To add a benchmark, write a module with ``NAME``, ``TITLE`` and
``run`` and add its name here.
"""

from __future__ import annotations

from typing import Final

BENCHMARKS: Final[tuple[str, ...]] = (
    "bus",
    "stall",
    "interrupt",
    "step",
    "ws",
    "sessions",
    "replay",
    "redis",
)
"""Module names, in the order ``trio-agent bench`` runs them."""

__all__ = ["BENCHMARKS"]
