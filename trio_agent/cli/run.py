"""``trio-agent run [--model SPEC] [--base-url URL] [--max-tokens N] [--events jsonl]
[--tools NAMES] [--approve NAMES] [--mcp SERVER …] PROMPT``: one run on the built-in
tools (and the tools of the MCP servers given); the text as it streams, or every event
as one JSON line.  An MCP server that cannot be started ends it at once (exit status 1,
the message saying why).

A call that needs approval (``--approve``) is asked about on the terminal (stderr, the
answer read from stdin: ``y`` runs it, anything else denies it — typed words are the
reason the model reads); when stdin is not a terminal nobody can answer, and the call is
denied with a reason that says so.  Questions are asked one at a time, while the run
goes on."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import AsyncExitStack
from typing import Final

import orjson
import trio

from .. import events as ev
from .._runtime import Session
from .options import (
    UsageError,
    approval_of,
    enter_runtime,
    mcp_of,
    model_of,
    tracer_provider_of,
)

__all__ = ["NOBODY_TO_ASK", "add_run_arguments", "run_command"]

NOBODY_TO_ASK: Final = (
    "nobody could approve it: trio-agent run's stdin is not a terminal "
    "(answer on a terminal, or leave the tool out of --approve)"
)
"""The reason a call that needs approval is denied when stdin is not a terminal."""


def _ask(question: str) -> str:
    """Ask on the terminal (a worker thread: reading stdin blocks)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    return sys.stdin.readline().strip()


async def decide(session: Session, request: ev.ToolApprovalRequested, lock: trio.Lock) -> None:
    """Ask the terminal about one call waiting for approval, and say so to the session."""
    if not sys.stdin.isatty():
        await session.deny(request.call_id, NOBODY_TO_ASK)
        return
    arguments = orjson.dumps(request.arguments).decode()
    question = (
        f"\ntrio-agent run: the model calls {request.name} with {arguments}; "
        "run it? [y/N, or a reason to say no] "
    )
    async with lock:  # one question at a time
        answer = await trio.to_thread.run_sync(_ask, question, abandon_on_cancel=True)
    if answer.lower() in ("y", "yes"):
        await session.approve(request.call_id)
    else:
        reason = "" if answer.lower() in ("", "n", "no") else answer
        await session.deny(request.call_id, reason or "denied on the terminal")


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
    offered = [by_name[n] for n in names]
    try:
        approval = approval_of(args, offered)
        servers = mcp_of(args)
        model = model_of(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"trio-agent run: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        status = "failed"
        error = ""
        asking = trio.Lock()
        async with AsyncExitStack() as stack:
            tracer_provider = await stack.enter_async_context(tracer_provider_of(args))  # --otel
            runtime = await enter_runtime(
                stack,
                "run",
                model=model,
                tools=offered,
                approval=approval,
                mcp=servers,
                tracer_provider=tracer_provider,
            )
            if isinstance(runtime, int):
                return runtime  # (what went wrong is said)
            questions = await stack.enter_async_context(trio.open_nursery())
            session = await runtime.open_session("cli")
            async with session.subscribe(after=0) as events:
                await session.send(args.prompt)
                async for event in events:
                    if isinstance(event, ev.ToolApprovalRequested):
                        questions.start_soon(decide, session, event, asking)
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
            questions.cancel_scope.cancel()  # (a question nobody answered: the run is over)
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
    except UsageError as exc:  # (--otel without the extra)
        print(f"trio-agent run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
