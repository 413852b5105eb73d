"""``step``: the agent loop's overhead per step, with an instant model (issue 3).

A scripted model with no delay plays ``STEPS_PER_RUN - 1`` turns that each stream one
token and call an instant tool (so every step goes through the whole loop: the step's
cancel scope and nursery, ``thinking``, the token, the streamed tool call —
``tool_call_start``, ``tool_call_delta``s, ``tool_call`` — the tool task under the
limiter, ``tool_result``, the boundary check), then a final answer turn.  Runs are
kept short (the default ``max_steps``) so that the conversation the reducer rebuilds
at each step stays realistic.  Time per step = time from ``send`` to ``done`` summed
over the runs / steps.  One subscriber listens for ``done`` only.

Baselines, same run: an empty trio loop doing as many checkpoints as the agent loop's
tasks took scheduling steps (counted once with a ``trio.abc.Instrument``), per step;
and the trio primitives the loop's structure opens, with nothing inside them — per
step a cancel scope and a nursery, and for a step with a tool call a task in it under
its timeout (a scope's deadline); per one-step run the command lock, a cancel scope and a
nursery.  The second is the floor that structured concurrency itself costs here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import trio

import trio_agent
from trio_agent.models import Chunk, Finish, Message, TextDelta, ToolSpec
from trio_agent.testing import ScriptBuilder, ScriptedModel

from ._common import Figure, Progress, Stat, Target, compare, runs_for

NAME: Final = "step"
TITLE: Final = "Agent loop overhead per step"

STEPS_PER_RUN: Final = 20
RUNS_PER_SAMPLE: Final = 50
QUICK_RUNS_PER_SAMPLE: Final = 10
TARGET_US: Final = 50.0
BASELINE: Final = "empty trio loop, same checkpoints"
STEP_PRIMITIVES: Final = "trio primitives per step (scope, nursery, tool task + timeout)"
RUN_PRIMITIVES: Final = "trio primitives per run (command lock, scope, nursery)"


@trio_agent.tool
async def instant(n: int) -> int:
    """Return ``n`` at once (an instant tool)."""
    return n


def _script() -> dict[str, Any]:
    builder = ScriptBuilder()
    for i in range(STEPS_PER_RUN - 1):
        builder = builder.turn(
            tokens=["ok"],
            tool_calls=[{"id": f"c{i}", "name": "instant", "arguments": {"n": i}}],
        )
    builder = builder.turn(tokens=["done"])
    script: dict[str, Any] = builder.build()
    return script


class _TaskSteps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


async def _one_run(script: dict[str, Any]) -> tuple[float, int]:
    """Seconds from ``send`` to ``done`` for one run, and the steps it took."""
    model = ScriptedModel(script)
    async with trio_agent.open_runtime(
        model=model, tools=[instant], max_steps=STEPS_PER_RUN
    ) as runtime:
        session = await runtime.open_session("bench")
        async with session.subscribe(types=["done"]) as events:
            t0 = time.perf_counter()
            await session.send("go")
            done = await events.receive()
            elapsed = time.perf_counter() - t0
    if getattr(done, "status", None) != "completed":
        raise RuntimeError(f"step benchmark run ended {done!r}, not completed")
    return elapsed, session.state.step


def _ours(runs: int, script: dict[str, Any]) -> tuple[float, int]:
    async def main() -> tuple[float, int]:
        total, steps = 0.0, 0
        for _ in range(runs):
            t, s = await _one_run(script)
            total += t
            steps += s
        return total, steps

    return trio.run(main)


def _count_checkpoints(script: dict[str, Any]) -> tuple[int, int]:
    """Task steps the scheduler ran during one run (send → done), and the steps."""
    counter = _TaskSteps()

    async def main() -> tuple[int, int]:
        model = ScriptedModel(script)
        async with trio_agent.open_runtime(
            model=model, tools=[instant], max_steps=STEPS_PER_RUN
        ) as runtime:
            session = await runtime.open_session("bench")
            async with session.subscribe(types=["done"]) as events:
                trio.lowlevel.add_instrument(counter)
                before = counter.steps
                await session.send("go")
                await events.receive()
                trio.lowlevel.remove_instrument(counter)
            return counter.steps - before, session.state.step

    return trio.run(main)


async def _instant_tool() -> None:
    with trio.CancelScope(deadline=trio.current_time() + 60):  # (a call's timeout)
        await instant.fn(n=0)  # (the tool itself, which returns at once)


def _primitives(n: int, *, lock: bool, tool: bool) -> float:
    """Seconds per iteration of the trio primitives a step (``lock``: a one-step run,
    with its command lock) opens, empty; ``tool``: with a tool task in its nursery, in
    as many steps as the script makes a call (all but each run's last)."""

    async def main() -> float:
        commands = trio.Lock()
        t0 = time.perf_counter()
        for i in range(n):
            if lock:
                async with commands:
                    pass
            with trio.CancelScope():
                async with trio.open_nursery() as nursery:
                    if tool and i % STEPS_PER_RUN != STEPS_PER_RUN - 1:
                        nursery.start_soon(_instant_tool)
        return (time.perf_counter() - t0) / n

    return trio.run(main)


def _empty_loop(checkpoints: int) -> float:
    async def main() -> float:
        checkpoint = trio.lowlevel.checkpoint
        t0 = time.perf_counter()
        for _ in range(checkpoints):
            await checkpoint()
        return time.perf_counter() - t0

    return trio.run(main)


class _InstantAnswer:
    """A model that answers one token at once: a step with nothing but the loop."""

    async def _stream(self) -> AsyncIterator[Chunk]:
        yield TextDelta("ok")
        yield Finish()

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[Chunk]:
        return self._stream()

    async def aclose(self) -> None:
        pass


def _answer_only(runs: int) -> float:
    """Seconds per one-step run (send → user_input, run_started, thinking, one token,
    done), ``runs`` runs in a row in one session."""

    async def main() -> float:
        async with trio_agent.open_runtime(model=_InstantAnswer()) as runtime:
            session = await runtime.open_session("bench")
            async with session.subscribe(types=["done"]) as events:
                t0 = time.perf_counter()
                for _ in range(runs):
                    await session.send("go")
                    await events.receive()
                return (time.perf_counter() - t0) / runs

    return trio.run(main)


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    runs = runs_for(quick)
    per_sample = QUICK_RUNS_PER_SAMPLE if quick else RUNS_PER_SAMPLE
    say = progress or (lambda _: None)
    script = _script()
    say("counting the scheduler's steps per run")
    checkpoints, steps_per_run = _count_checkpoints(script)
    steps = steps_per_run * per_sample
    say(f"{steps:,} steps x {runs} runs vs an empty trio loop")

    def ours() -> float:
        total, counted = _ours(per_sample, script)
        return total / counted * 1e6

    def empty() -> float:
        return _empty_loop(checkpoints * per_sample) / steps * 1e6

    def floor() -> float:
        return _primitives(steps, lock=False, tool=True) * 1e6

    stats = compare({"ours": ours, BASELINE: empty, STEP_PRIMITIVES: floor}, runs)
    ours_stat: Stat = stats.pop("ours")
    say("one-step runs with an instant answer")
    answers = compare(
        {
            "ours": lambda: _answer_only(per_sample * 10) * 1e6,
            RUN_PRIMITIVES: lambda: _primitives(per_sample * 10, lock=True, tool=False) * 1e6,
        },
        runs,
    )
    return [
        Figure(
            benchmark=NAME,
            name="step.answer_only",
            title="one-step run, instant answer (send → done)",
            unit="µs/step",
            kind="overhead",
            higher_is_better=False,
            ours=answers.pop("ours"),
            baselines=answers,
            targets=(Target(f"≤ {TARGET_US:g} µs per step", at_most=TARGET_US),),
            notes=(
                "the loop alone: the send command, the step's cancel scope and boundary "
                "checks, and five events (user_input, run_started, thinking, one token, "
                "done), with a model that answers at once and no tool call"
            ),
        ),
        Figure(
            benchmark=NAME,
            name="step.overhead",
            title="agent loop time per step (instant model)",
            unit="µs/step",
            kind="overhead",
            higher_is_better=False,
            ours=ours_stat,
            baselines=stats,
            targets=(Target(f"≤ {TARGET_US:g} µs per step", at_most=TARGET_US),),
            notes=(
                f"{per_sample} runs of {steps_per_run} steps per sample (one token + one "
                f"instant tool call per step, then an answer); {checkpoints} scheduler "
                "steps per run, which the baseline loop repeats as bare checkpoints"
            ),
        ),
    ]
