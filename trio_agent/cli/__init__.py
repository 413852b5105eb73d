"""The ``trio-agent`` command line (DESIGN §7): ``demo``, ``run``, ``serve``, ``bench``.

- :func:`main` — ``trio-agent ARGS`` (also ``python -m trio_agent.cli ARGS``): parse,
  then hand the arguments to the subcommand; returns the exit status;
- :func:`parser` — the argument parser of every subcommand;
- :mod:`.demo` — ``trio-agent demo``: one scripted run rendered in the terminal;
- :mod:`.run` — ``trio-agent run``: one run, its text or every event as JSON lines;
- :mod:`.serve` — ``trio-agent serve``: the WebSocket, SSE, HTTP command and AG-UI
  endpoints and the page, with a flag
  for every ``ServerLimits`` field and the Redis options (coredis is imported only when
  ``--redis`` is given);
- :mod:`.bench` — ``trio-agent bench``: the benchmark suite, with the runner's own options.

Each subcommand's module has ``add_*_arguments(parser)`` and ``*_command(args) -> int``;
what ``run`` and ``serve`` share (``--model``, ``--base-url``, ``--approve``) is in
:mod:`.options`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .bench import add_bench_arguments, bench_command
from .demo import add_demo_arguments, demo_command
from .options import DEFAULT_MODEL_SPEC, add_agent_arguments, add_model_arguments
from .run import add_run_arguments, run_command
from .serve import add_serve_arguments, serve_command

__all__ = ["DEFAULT_MODEL_SPEC", "add_model_arguments", "main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The parser of ``trio-agent``: one subparser per subcommand, its ``command``."""
    top = argparse.ArgumentParser(
        prog="trio-agent",
        description="A structured-concurrency runtime, on trio, for LLM agents that stream.",
    )
    sub = top.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the terminal demo on the scripted model (offline)")
    add_demo_arguments(demo)

    run = sub.add_parser("run", help="one run; the text as it streams, or every event")
    add_model_arguments(run)
    add_agent_arguments(run)
    add_run_arguments(run)

    serve = sub.add_parser(
        "serve", help="the WebSocket, SSE, HTTP command and AG-UI endpoints and the browser page"
    )
    add_model_arguments(serve)
    add_agent_arguments(serve)
    add_serve_arguments(serve)

    bench = sub.add_parser("bench", help="the benchmark suite")
    add_bench_arguments(bench)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """``trio-agent ARGS`` (``sys.argv[1:]`` if None); returns the exit status."""
    args = parser().parse_args(argv)
    if args.command == "demo":
        return demo_command(args)
    if args.command == "run":
        return run_command(args)
    if args.command == "serve":
        return serve_command(args)
    if args.command == "bench":
        return bench_command(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse requires one
