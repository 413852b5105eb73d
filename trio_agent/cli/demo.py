"""``trio-agent demo``: one run rendered in the terminal, scripted or on a real model.

What it shows, offline and in about ten seconds: text streaming token by token; a tool
call whose arguments stream in and then run; a steering message sent mid-run that the
next step answers; a hard interrupt during a slow tool (the call ends ``cancelled``);
resume with an instruction; ``done``; then the event timeline and the final state.
(:func:`run_demo`; ``trio-agent demo [--speed X]`` is :func:`demo_command`.)

``--model openai:MODEL --base-url URL`` (and ``--max-tokens N``, as for ``run``) plays
the same story on a real model — a local llama.cpp, vLLM or Ollama server, or a
provider.  Such a model may call no tool, so the hard interrupt comes instead at the
first token of the answer to the steering message (a cut mid-generation), unless a
``sleep`` call came first.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Final

import trio

from .. import events as ev
from .._runtime import Session, open_runtime
from ..errors import SessionStateError
from ..models import Model
from ..models.scripted import ScriptedModel
from ..tools import DEMO_TOOLS
from .options import add_model_arguments, model_of

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["add_demo_arguments", "demo_command", "run_demo"]

PROMPT: Final = "What is (2+3)*7? Then take a short nap."
STEER: Final = "Also, say hi to everyone watching!"
RESUME: Final = "Skip the nap and wrap up."
INTERRUPT_AFTER: Final = 1.0
"""Seconds into the slow tool before the demo interrupts it."""

_STATUS_STYLE: Final = {
    "ok": "green",
    "error": "red",
    "timeout": "yellow",
    "cancelled": "magenta",
}


def _summary(e: ev.Event) -> str:
    d = e.to_dict()
    for key in ("type", "session", "run", "step", "seq", "ts"):
        d.pop(key, None)
    text = ", ".join(f"{k}={v!r}" for k, v in d.items())
    return text if len(text) <= 70 else text[:67] + "..."


async def _demo(console: Console, speed: float, model: Model) -> None:
    async with open_runtime(model=model, tools=DEMO_TOOLS) as runtime:
        session = await runtime.open_session("demo")
        async with trio.open_nursery() as nursery, session.subscribe(after=0) as events:
            nursery.start_soon(session.send, PROMPT)
            cut = not isinstance(model, ScriptedModel)
            await _render(console, session, events, nursery, speed, cut_mid_answer=cut)
        _report(console, session)


async def _interrupt_later(
    session: Session, delay: float, reason: str = "the nap is taking too long"
) -> None:
    await trio.sleep(delay)
    try:
        await session.interrupt("hard", reason=reason)
    except SessionStateError:
        pass  # a real model's answer ended first: there is nothing left to cut


async def _resume_later(session: Session, delay: float) -> None:
    await trio.sleep(delay)
    await session.resume(RESUME)


async def _render(
    console: Console,
    session: Session,
    events: object,
    nursery: trio.Nursery,
    speed: float,
    *,
    cut_mid_answer: bool = False,
) -> None:
    steered = False
    in_text = False
    streaming_call: str | None = None
    # (with a real model: the step that answers the steering message, which the demo
    # interrupts at its first token unless a sleep call was interrupted before)
    answering = interrupting = False
    async for e in events:  # type: ignore[attr-defined]
        if in_text and not isinstance(e, ev.TokenStream):
            console.print()
            in_text = False
        if isinstance(e, ev.UserInput):
            label = "steer" if session.state.running and e.step > 0 else "you"
            console.print(f"[bold cyan]▶ {label}:[/] {e.text}")
        elif isinstance(e, ev.RunStarted):
            console.print(f"[dim]── run {e.run} started[/]")
        elif isinstance(e, ev.Thinking):
            answering = steered and cut_mid_answer and not interrupting
            users = [m.content for m in session.state.messages if m.role == "user"]
            newest = f" (newest user message in its input: {users[-1]!r})" if users else ""
            console.print(f"[dim]── step {e.step}: thinking…{newest}[/]")
        elif isinstance(e, ev.TokenStream):
            if not in_text:
                console.print("[bold]assistant:[/] ", end="")
                in_text = True
            console.print(e.text, end="", highlight=False)
            if answering:
                answering, interrupting = False, True
                nursery.start_soon(_interrupt_later, session, 0, "cut mid-answer")
            if not steered and e.run == 1 and e.step == 1:
                steered = True
                nursery.start_soon(session.send, STEER)
        elif isinstance(e, ev.ToolCallStart):
            console.print(f"[yellow]⚙ {e.name}[/](", end="")
            streaming_call = e.call_id
        elif isinstance(e, ev.ToolCallDelta):
            console.print(e.delta, end="", style="yellow", highlight=False, markup=False)
        elif isinstance(e, ev.ToolCall):
            if streaming_call is not None:
                console.print(")")
                streaming_call = None
            console.print(f"[yellow]  running {e.name}…[/]")
            if e.name == "sleep" and not interrupting:
                interrupting = True
                nursery.start_soon(_interrupt_later, session, INTERRUPT_AFTER / speed)
        elif isinstance(e, ev.ToolResult):
            if streaming_call is not None:
                console.print(")")
                streaming_call = None
            style = _STATUS_STYLE.get(e.status, "white")
            detail = e.result if e.status == "ok" else e.error
            console.print(f"[{style}]  ↳ {e.status}[/]: {detail}")
        elif isinstance(e, ev.Interrupt):
            console.print(f"[magenta]⏸ interrupt ({e.mode}): {e.reason}[/]")
        elif isinstance(e, ev.Interrupted):
            console.print(f"[magenta]⏸ interrupted at step {e.step} ({e.mode})[/]")
            nursery.start_soon(_resume_later, session, 0.5 / speed)
        elif isinstance(e, ev.Resume):
            console.print(f"[bold cyan]▶ resume:[/] {e.instruction or ''}")
        elif isinstance(e, ev.Error):
            console.print(f"[red]✗ {e.code}: {e.message}[/]")
        elif isinstance(e, ev.Done):
            finish = f" finish_reason={e.finish_reason}" if e.finish_reason else ""
            console.print(f"[bold green]■ done ({e.status})[/] usage={dict(e.usage)}{finish}")
            return


def _report(console: Console, session: Session) -> None:
    from rich.table import Table

    table = Table(title="event timeline", show_lines=False, header_style="bold")
    table.add_column("seq", justify="right")
    table.add_column("type")
    table.add_column("run/step", justify="center")
    table.add_column("fields")
    merged: list[ev.Event] = []
    for e in session.log:
        # Consecutive tokens of one step as one row, as the WebSocket frames merge them.
        last = merged[-1] if merged else None
        if (
            isinstance(e, ev.TokenStream)
            and isinstance(last, ev.TokenStream)
            and last.step == e.step
        ):
            merged[-1] = ev.TokenStream(run=e.run, step=e.step, seq=e.seq, text=last.text + e.text)
            continue
        merged.append(e)
    for e in merged:
        table.add_row(str(e.seq), e.type, f"{e.run}/{e.step}", _summary(e))
    console.print(table)
    s = session.state
    final = Table(title="final state", show_header=False)
    final.add_row("status", s.status)
    final.add_row("run / step", f"{s.run} / {s.step}")
    final.add_row("events", str(s.seq))
    final.add_row("messages", ", ".join(m.role for m in s.messages))
    final.add_row("answer", s.done_text)
    final.add_row("usage", f"{s.usage.input_tokens} in, {s.usage.output_tokens} out")
    console.print(final)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-agent demo``: ``--speed`` and the model's."""
    parser.add_argument("--speed", type=float, default=1.0, help="time scale (2 = twice as fast)")
    add_model_arguments(parser)


def demo_command(args: argparse.Namespace) -> int:
    """``trio-agent demo``; returns the exit status."""
    import sys

    try:
        model = model_of(args)
    except (ValueError, OSError) as exc:
        print(f"trio-agent demo: {exc}", file=sys.stderr)
        return 2
    return run_demo(speed=args.speed, model=model, spec=args.model)


def run_demo(speed: float = 1.0, model: Model | None = None, spec: str = "scripted") -> int:
    # (rich is imported here, not by ``import trio_agent.cli``: only the demo draws)
    from rich.console import Console

    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    console = Console(highlight=False)
    if model is None or isinstance(model, ScriptedModel):
        console.print("[bold]trio-agent demo[/] — a scripted agent run, offline\n")
    else:
        where = getattr(model, "base_url", "")
        console.print(f"[bold]trio-agent demo[/] — an agent run on {spec} at {where}\n")
    trio.run(_demo, console, speed, model or ScriptedModel.demo())
    return 0
