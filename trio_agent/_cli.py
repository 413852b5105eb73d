"""The ``trio-agent`` command line: ``demo``, ``run``, ``serve``, ``bench``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import trio

from . import events as ev

__all__ = ["main"]

DEFAULT_MODEL_SPEC = "scripted"


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_SPEC,
        metavar="SPEC",
        help="scripted, scripted:FILE, openai:MODEL or anthropic:MODEL (default: scripted)",
    )
    parser.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="provider base URL (OpenAI-compatible: with /v1; Anthropic: the host root); "
        "default from OPENAI_BASE_URL / ANTHROPIC_BASE_URL",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-agent",
        description="A structured-concurrency runtime, on trio, for LLM agents that stream.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the terminal demo on the scripted model (offline)")
    demo.add_argument("--speed", type=float, default=1.0, help="time scale (2 = twice as fast)")

    run = sub.add_parser("run", help="one run; the text as it streams, or every event")
    _add_model_arguments(run)
    run.add_argument(
        "--events",
        choices=["jsonl"],
        default=None,
        help="print every event as one JSON line (wire form) instead of the text",
    )
    run.add_argument(
        "--tools",
        default="calculator,sleep",
        help="comma-separated built-in tools to offer (default: calculator,sleep; '' for none)",
    )
    run.add_argument("prompt", help="the user message")

    from ._server import add_serve_arguments

    serve = sub.add_parser("serve", help="the WebSocket endpoint and the browser page")
    _add_model_arguments(serve)
    add_serve_arguments(serve)

    bench = sub.add_parser("bench", help="the benchmark suite")
    bench.add_argument("--quick", action="store_true", help="fewer events and runs (smoke)")
    bench.add_argument("--only", nargs="+", metavar="NAME", default=None)
    bench.add_argument("--out", default="bench-results", metavar="DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(speed=args.speed)
    if args.command == "run":
        return _run_command(args)
    if args.command == "serve":
        from ._server import serve_command

        return serve_command(args)
    if args.command == "bench":
        from .bench import main as bench_main

        bench_argv = ["--out", args.out]
        if args.quick:
            bench_argv.append("--quick")
        if args.only:
            bench_argv += ["--only", *args.only]
        return bench_main(bench_argv)
    raise AssertionError(args.command)  # pragma: no cover - argparse requires one


def _run_command(args: argparse.Namespace) -> int:
    from ._runtime import open_runtime
    from .models import from_spec
    from .tools import DEMO_TOOLS

    by_name = {t.name: t for t in DEMO_TOOLS}
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        print(
            f"trio-agent run: unknown tool(s) {', '.join(unknown)}; "
            f"built-in tools: {', '.join(sorted(by_name))}",
            file=sys.stderr,
        )
        return 2
    try:
        model = from_spec(args.model, base_url=args.base_url)
    except (ValueError, OSError) as exc:
        print(f"trio-agent run: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        status = "failed"
        error = ""
        async with open_runtime(model=model, tools=[by_name[n] for n in names]) as runtime:
            session = await runtime.open_session("cli")
            async with session.subscribe(after=0) as events:
                await session.send(args.prompt)
                async for event in events:
                    try:
                        if args.events == "jsonl":
                            sys.stdout.buffer.write(event.to_wire() + b"\n")
                            sys.stdout.flush()
                        elif isinstance(event, ev.TokenStream):
                            sys.stdout.write(event.text)
                            sys.stdout.flush()
                    except BrokenPipeError:
                        # The reader went away (``| head``): stop quietly, as Unix tools do.
                        devnull = os.open(os.devnull, os.O_WRONLY)
                        os.dup2(devnull, sys.stdout.fileno())
                        return 0
                    if isinstance(event, ev.Error) and not event.retryable:
                        error = f"{event.code}: {event.message}"
                    elif isinstance(event, ev.Error):
                        print(f"trio-agent run: {event.message}", file=sys.stderr)
                    if isinstance(event, ev.Done):
                        status = event.status
                        break
        if args.events != "jsonl":
            sys.stdout.write("\n")
        if status != "completed":
            print(
                f"trio-agent run: the run ended {status}: {error or 'no answer'}", file=sys.stderr
            )
            return 1
        return 0

    try:
        return trio.run(go)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
