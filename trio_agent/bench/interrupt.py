"""``interrupt``: hard interrupt → ``interrupted`` published, wall clock (issue 3).

Two situations, ``TRIALS`` trials each (a fresh runtime and scripted model per trial):

- **streaming**: the scripted model streams tokens with a small delay per token; after
  a few tokens have arrived (and a random fraction of one token delay more) the
  session is interrupted hard;
- **tool**: the model calls a slow ``nap`` tool (an async ``trio.sleep``); once the
  ``tool_call`` event is seen and the tool has been running for a moment, hard
  interrupt.

Latency = ``interrupted.ts`` (stamped by the bus with ``time.time()`` when it is
published) minus ``time.time()`` just before ``session.interrupt("hard")`` is called;
so it covers the command (lock, the ``interrupt`` event), the cancelled step's cleanup
(``tool_result`` ``cancelled`` for open calls) and the boundary.  trio's real clock.

Baseline, same run: the floor trio itself sets — a task parked in a
``CancelScope`` is cancelled, and the time until the code after the scope runs.

The trials are split into runs (5, quick 3); each figure's samples are the per-run
percentiles, its headline the percentile pooled over every trial.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Final

import trio
import trio.lowlevel

import trio_agent
from trio_agent import events as ev
from trio_agent.testing import ScriptBuilder, ScriptedModel

from ._common import Figure, Progress, Stat, Target, percentile, runs_for

NAME: Final = "interrupt"
TITLE: Final = "Hard interrupt latency"

TRIALS: Final = 1_000
QUICK_TRIALS: Final = 100
TOKEN_DELAY: Final = 0.001
"""Seconds between the scripted model's tokens while streaming."""
TOKENS_BEFORE: Final = 3
"""Tokens seen before the interrupt in the streaming situation."""
TOOL_RUNNING: Final = 0.001
"""Seconds the slow tool runs before the interrupt."""
TARGET_P99_MS: Final = 1.0
FLOOR: Final = "trio cancel-scope floor"


@trio_agent.tool
async def nap(seconds: float) -> dict[str, float]:
    """Sleep for a while (a slow tool to interrupt)."""
    await trio.sleep(seconds)
    return {"slept": seconds}


def _script(situation: str) -> dict[str, Any]:
    builder = ScriptBuilder()
    if situation == "streaming":
        builder = builder.turn(tokens=[f" t{i}" for i in range(2_000)], delay=TOKEN_DELAY)
    else:
        builder = builder.turn(
            tokens=["napping"],
            tool_calls=[{"id": "n1", "name": "nap", "arguments": {"seconds": 60}}],
        )
    builder = builder.turn(tokens=["after the interrupt"])
    script: dict[str, Any] = builder.build()
    return script


async def _trial(situation: str, script: dict[str, Any], rng: random.Random) -> float:
    """Seconds from ``interrupt("hard")`` to ``interrupted`` being published."""
    model = ScriptedModel(script)
    async with trio_agent.open_runtime(model=model, tools=[nap]) as runtime:
        session = await runtime.open_session("bench")
        async with session.subscribe(after=0) as events:
            await session.send("go")
            tokens = 0
            async for e in events:
                if situation == "streaming" and e.type == "token_stream":
                    tokens += 1
                    if tokens >= TOKENS_BEFORE:
                        break
                if situation == "tool" and e.type == "tool_call":
                    break
            await trio.sleep(
                rng.uniform(0, TOKEN_DELAY) if situation == "streaming" else TOOL_RUNNING
            )
            t0 = time.time()
            await session.interrupt("hard", reason="bench")
            async for e in events:
                if isinstance(e, ev.Interrupted):
                    return e.ts - t0
    raise RuntimeError(f"no 'interrupted' event in the {situation} trial")


async def _floor_trial() -> float:
    """Seconds from ``cancel_scope.cancel()`` to the code after the scope running."""
    resumed = trio.Event()
    out: list[float] = []

    async def parked(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await trio.sleep(math.inf)
        out.append(time.time())
        resumed.set()

    async with trio.open_nursery() as nursery:
        scope = await nursery.start(parked)
        await trio.lowlevel.checkpoint()
        t0 = time.time()
        scope.cancel()
        await resumed.wait()
    return out[0] - t0


def _latencies(situation: str, trials: int, seed: int) -> list[float]:
    async def main() -> list[float]:
        rng = random.Random(seed)
        script = _script(situation) if situation != "floor" else {}
        out = []
        for _ in range(trials):
            if situation == "floor":
                out.append(await _floor_trial())
            else:
                out.append(await _trial(situation, script, rng))
        return out

    return trio.run(main)


def _figures(
    situation: str, title: str, ours: list[list[float]], floor: list[list[float]]
) -> list[Figure]:
    figures = []
    pooled = [x * 1e3 for run in ours for x in run]
    pooled_floor = [x * 1e3 for run in floor for x in run]
    pcts = {f"p{p:g}": percentile(pooled, p) for p in (50, 90, 99)}
    pcts["max"] = max(pooled)
    for p in (50, 99):
        per_run = tuple(percentile([x * 1e3 for x in run], p) for run in ours)
        per_run_floor = tuple(percentile([x * 1e3 for x in run], p) for run in floor)
        figures.append(
            Figure(
                benchmark=NAME,
                name=f"interrupt.{situation}.p{p}",
                title=f"hard interrupt → interrupted, {title}, p{p}",
                unit="ms",
                kind="latency",
                higher_is_better=False,
                ours=Stat(per_run, headline=percentile(pooled, p)),
                baselines={FLOOR: Stat(per_run_floor, headline=percentile(pooled_floor, p))},
                targets=(
                    (Target(f"p99 ≤ {TARGET_P99_MS:g} ms", at_most=TARGET_P99_MS),)
                    if p == 99
                    else ()
                ),
                percentiles=pcts,
                notes=f"{len(pooled):,} trials in {len(ours)} runs; wall clock (time.time)",
            )
        )
    return figures


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    trials = QUICK_TRIALS if quick else TRIALS
    runs = runs_for(quick)
    per_run = max(1, trials // runs)
    say = progress or (lambda _: None)
    say("warm-up")
    for situation in ("streaming", "tool", "floor"):
        _latencies(situation, 5, seed=0)
    measured: dict[str, list[list[float]]] = {"streaming": [], "tool": [], "floor": []}
    for r in range(runs):
        for situation in measured:
            say(f"{situation} — run {r + 1}/{runs}, {per_run} trials")
            measured[situation].append(_latencies(situation, per_run, seed=r + 1))
    return [
        *_figures("streaming", "model streaming", measured["streaming"], measured["floor"]),
        *_figures("tool", "slow tool running", measured["tool"], measured["floor"]),
    ]
