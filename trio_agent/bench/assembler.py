"""``assembler``: one tool call's arguments streamed in tiny fragments, short and long.

A coding agent that writes a file through a tool call streams its arguments in
thousands of deltas of a few characters.  Assembly must be linear: the cost of a
fragment must not grow with the fragments before it.  Two figures, each the rate at
``LONG`` fragments against the rate at ``SHORT`` fragments measured in the same run (a
linear path keeps the ratio near 1; the quadratic one it replaced fell to 0.01 at
80,000):

- ``assembler.fragments``: the sans-I/O :class:`ToolCallAssembler` alone, fed
  one-character :class:`ToolCallChunk` fragments of one call, then finished;
- ``assembler.session``: the same call through a session (the agent loop turns each
  fragment into a ``tool_call_delta`` event; a subscriber drains them in batches) until
  ``tool_call`` with the parsed arguments.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Final

import trio

import trio_agent
from trio_agent._core.assembler import ToolCallAssembler
from trio_agent.models import Finish, Message, TextDelta, ToolCallChunk, ToolSpec

from ._common import Figure, Progress, Target, compare, runs_for

NAME: Final = "assembler"
TITLE: Final = "Tool-call assembly: one call streamed in 1,000 vs 100,000 fragments"

SHORT: Final = 1_000
LONG: Final = 100_000
QUICK_LONG: Final = 20_000
SHORT_LABEL: Final = f"{SHORT:,} fragments"
TARGET: Final = 0.7
"""Fragments/s at the long call may fall at most to 0.7x the short call's (issue 10)."""


def _chunks(n: int) -> list[ToolCallChunk]:
    return [ToolCallChunk(0, arguments="a") for _ in range(n)]


def assemble(chunks: Sequence[ToolCallChunk]) -> float:
    """Seconds to assemble one call of ``chunks`` one-character fragments."""
    t0 = time.perf_counter()
    assembler = ToolCallAssembler()
    feed = assembler.feed
    feed(ToolCallChunk(0, "w", "write", '{"c":"'))
    for chunk in chunks:
        feed(chunk)
    feed(ToolCallChunk(0, arguments='"}'))
    facts = assembler.finish()
    elapsed = time.perf_counter() - t0
    assert len(facts[-1].arguments["c"]) == len(chunks)  # type: ignore[union-attr,index]
    return elapsed


class _LongCall:
    """A model whose first call streams one ``write`` call in ``n`` fragments."""

    def __init__(self, n: int) -> None:
        self.chunks = _chunks(n)
        self.calls = 0

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[TextDelta | ToolCallChunk | Finish]:
        self.calls += 1
        if self.calls == 1:
            yield ToolCallChunk(0, "w", "write", '{"c":"')
            for chunk in self.chunks:
                yield chunk
            yield ToolCallChunk(0, arguments='"}')
            yield Finish("tool_calls")
        else:
            yield TextDelta("done")
            yield Finish()

    async def aclose(self) -> None:
        pass


@trio_agent.tool
async def write(c: str) -> int:
    """Pretend to write ``c`` somewhere; return its length."""
    return len(c)


def through_a_session(n: int) -> float:
    """Seconds from ``send`` until ``tool_call`` of a call streamed in ``n`` fragments."""

    async def main() -> float:
        async with trio_agent.open_runtime(model=_LongCall(n), tools=[write]) as runtime:
            session = await runtime.open_session("bench")
            async with session.subscribe(capacity=1024) as events:
                t0 = time.perf_counter()
                await session.send("write it")
                while True:
                    batch = await events.receive_batch()
                    if any(e.type == "tool_call" for e in batch):
                        return time.perf_counter() - t0

    return trio.run(main)


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    long = QUICK_LONG if quick else LONG
    runs = runs_for(quick)
    say = progress or (lambda _: None)
    long_label = f"{long:,} fragments"
    figures = []
    for name, title, measure in (
        ("assembler.fragments", "ToolCallAssembler alone", assemble),
        ("assembler.session", "through a session to a subscriber", None),
    ):
        say(f"{title}: {SHORT:,} vs {long:,} fragments, x {runs} runs")
        if measure is None:
            stats = compare(
                {
                    long_label: lambda: long / through_a_session(long),
                    SHORT_LABEL: lambda: SHORT / through_a_session(SHORT),
                },
                runs,
            )
        else:
            short_chunks, long_chunks = _chunks(SHORT), _chunks(long)
            stats = compare(
                {
                    long_label: lambda c=long_chunks: len(c) / assemble(c),  # type: ignore[misc]
                    SHORT_LABEL: lambda c=short_chunks: len(c) / assemble(c),  # type: ignore[misc]
                },
                runs,
            )
        figures.append(
            Figure(
                benchmark=NAME,
                name=name,
                title=f"fragments/s, one call of {long:,} one-character fragments, {title}",
                unit="fragments/s",
                kind="throughput",
                ours=stats.pop(long_label),
                baselines=stats,
                targets=(
                    Target(f"≥ {TARGET}x the rate at {SHORT:,}", SHORT_LABEL, at_least=TARGET),
                ),
                notes=(
                    f"The same call streamed in {SHORT:,} and in {long:,} one-character "
                    "fragments, measured round-robin in one process; the ratio says "
                    "whether a fragment's cost grows with the fragments before it."
                ),
            )
        )
    return figures
