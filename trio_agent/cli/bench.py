"""``trio-agent bench``: the benchmark suite (:mod:`trio_agent.bench.runner`), with the
runner's own options — one definition of them, whichever way it is started."""

from __future__ import annotations

import argparse

from ..bench import runner

__all__ = ["add_bench_arguments", "bench_command"]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options (``--quick``, ``--only NAME ...``, ``--out DIR``)."""
    parser.description = runner.DESCRIPTION
    runner.add_arguments(parser)


def bench_command(args: argparse.Namespace) -> int:
    """Run the suite as ``args`` ask; returns the exit status."""
    return runner.run(args)
