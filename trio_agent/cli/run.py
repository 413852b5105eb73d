"""``trio-agent run [--model SPEC] [--events jsonl] [--tools NAMES] PROMPT``: one run on
the built-in tools; the text as it streams, or every event as one JSON line."""

from __future__ import annotations

import argparse
import os
import sys

import trio

from .. import events as ev

__all__ = ["add_run_arguments", "run_command"]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-agent run`` besides ``--model`` and ``--base-url``."""
    parser.add_argument(
        "--events",
        choices=["jsonl"],
        default=None,
        help="print every event as one JSON line (wire form) instead of the text",
    )
    parser.add_argument(
        "--tools",
        default="calculator,sleep",
        help="comma-separated built-in tools to offer (default: calculator,sleep; '' for none)",
    )
    parser.add_argument("prompt", help="the user message")


def run_command(args: argparse.Namespace) -> int:
    """``trio-agent run``: one run to its end.  Returns the exit status: 0 completed, 1
    it ended otherwise, 2 bad usage, 130 interrupted."""
    from .._runtime import open_runtime
    from ..models import from_spec
    from ..tools import DEMO_TOOLS

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
