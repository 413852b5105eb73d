"""The benchmark suite behind ``trio-agent bench``, shipped with the package.

Timings live here, never in tests.  What this package offers:

- :data:`BENCHMARKS`: the benchmark modules (``trio_agent.bench.<name>``), in the order
  ``trio-agent bench`` runs them;
- :func:`main`: the runner (``trio-agent bench [--quick] [--only NAME ...] [--out DIR]``,
  also ``python -m trio_agent.bench``), see :mod:`trio_agent.bench.runner`.

Each benchmark module exposes ``NAME``, ``TITLE``, optionally ``REQUIRES`` and
``PROGRAMS`` (what it needs beyond the base install: missing, it is skipped with a
message naming the extra to install) and ``run(quick, progress) -> list[Figure]`` (see
:mod:`trio_agent.bench._common`).  Every figure is measured against its baselines in the
same process, in the same run, on the same machine, and quoted as the median of several
runs after a warm-up.  To add a benchmark, write a module with ``NAME``, ``TITLE`` and
``run`` and add its name here.  Optional third-party modules (langgraph, websockets,
matplotlib, coredis, mcp) are imported only inside the functions that use them, so that
importing any module of this package needs nothing beyond the base install.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

BENCHMARKS: Final[tuple[str, ...]] = (
    "bus",
    "stall",
    "interrupt",
    "step",
    "ws",
    "sse",
    "sessions",
    "replay",
    "assembler",
    "redis",
    "approval",
    "tracing",
    "mcp",
    "llama",
)
"""Module names, in the order ``trio-agent bench`` runs them."""

__all__ = ["BENCHMARKS", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite (see :mod:`trio_agent.bench.runner`); returns the exit status."""
    from .runner import main as run_main

    return run_main(argv)
