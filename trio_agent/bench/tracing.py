"""``tracing``: what tracing every run (``open_runtime(tracer_provider=...)``) costs.

Every variant runs the same sessions through a runtime, once without a tracer (the
baseline) and once with one: the OpenTelemetry SDK's ``TracerProvider`` with a
``BatchSpanProcessor`` (as ``--otel`` sets it up) and an exporter that accepts every
batch and sends nothing, so the figure is our tracer and the SDK, not a network.
Measured round-robin in the same process and the same run.

- **Tokens through one session.**  One session streams ``TOKENS`` tokens (a scripted
  model with no delay) to one lossless subscriber draining with ``receive_batch``:
  tokens/s, traced against untraced.  Target ≥ 0.8×.  The tracer reads no token (it
  subscribes to the other event types unless it captures content), so the token path
  never waits for it; the same with content captured (it then reads every event, and
  folds the log to record each model call's input) is a second figure, with no target.
- **Many sessions at once.**  ``SESSIONS`` sessions streaming ``SESSION_TOKENS`` tokens
  each at once, one subscriber each (as the ``sessions`` benchmark): aggregate tokens/s,
  traced against untraced.  Target ≥ 0.8×.
- **Runs with tool calls.**  Short runs back to back, each a model call with a tool call
  (the calculator), then an answer — four spans for about a dozen events, the tracer's
  worst case: runs/s, traced against untraced.  No target; it says what a span costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final

import trio
import trio.testing

from ._common import Figure, Progress, Target, compare, runs_for
from .bus import WORDS

NAME: Final = "tracing"
TITLE: Final = "Tracing on against off: tokens through a session, many sessions, tool runs"
REQUIRES: Final = {"opentelemetry.sdk": "otel"}

TOKENS: Final = 200_000
QUICK_TOKENS: Final = 20_000
SESSIONS: Final = 1_000
QUICK_SESSIONS: Final = 100
SESSION_TOKENS: Final = 200
RUNS_BACK_TO_BACK: Final = 300
QUICK_RUNS_BACK_TO_BACK: Final = 50
TARGET_RATIO: Final = 0.8

OFF: Final = "tracing off"


def _provider() -> Any:
    """An SDK provider batching spans to an exporter that sends nothing."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return provider


def _observers(mode: str, provider: Any) -> dict[str, Any]:
    from trio_agent.tracing import SessionTracer

    if mode == "off":
        return {}
    return {"observers": [SessionTracer(provider, capture_content=mode == "content")]}


def _tokens_script(tokens: int) -> dict[str, Any]:
    from trio_agent.testing import ScriptBuilder

    script: dict[str, Any] = (
        ScriptBuilder().turn(tokens=[WORDS[i & 31] for i in range(tokens)]).build()
    )
    return script


def streams(sessions: int, tokens: int, mode: str, provider: Any) -> float:
    """Seconds for ``sessions`` sessions to stream ``tokens`` tokens each to one
    subscriber each, from the first ``send`` to the last ``done``."""
    from trio_agent import DEFAULT_MAX_SESSIONS, open_runtime
    from trio_agent.testing import ScriptedModel

    model = ScriptedModel(_tokens_script(tokens))

    async def main() -> float:
        async with open_runtime(
            model=model,
            max_sessions=max(sessions, DEFAULT_MAX_SESSIONS),
            **_observers(mode, provider),
        ) as runtime:
            opened = [await runtime.open_session(f"s{k}") for k in range(sessions)]
            subs = [s.open_subscription() for s in opened]

            async def consume(k: int) -> None:
                receive_batch = subs[k].receive_batch
                while not any(e.type == "done" for e in await receive_batch()):
                    pass

            await trio.testing.wait_all_tasks_blocked()  # (the tracers attached)
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for k in range(sessions):
                    nursery.start_soon(consume, k)
                for s in opened:
                    await s.send("go")
            elapsed = time.perf_counter() - t0
            for sub in subs:
                sub.close()
        return elapsed

    return trio.run(main)


def tool_runs(runs: int, mode: str, provider: Any) -> float:
    """Seconds for ``runs`` runs back to back in one session, each a tool call and an
    answer."""
    from trio_agent import calculator, open_runtime
    from trio_agent.testing import ScriptBuilder

    builder = ScriptBuilder()
    for _ in range(runs):
        call = {"id": "c", "name": "calculator", "arguments": {"expression": "6*7"}}
        builder = builder.turn(["Let", " me"], tool_calls=[call]).turn(["42."])
    model = builder.model()

    async def main() -> float:
        async with open_runtime(
            model=model, tools=[calculator], **_observers(mode, provider)
        ) as rt:
            session = await rt.open_session("s")
            await trio.testing.wait_all_tasks_blocked()
            t0 = time.perf_counter()
            async with session.subscribe() as events:
                for _ in range(runs):
                    await session.send("6*7?")
                    while (await events.receive()).type != "done":
                        pass
            return time.perf_counter() - t0

    return trio.run(main)


def _rate(count: float, measure: Callable[..., float], *args: Any) -> float:
    """``count`` per second of what ``measure(*args)`` timed."""
    return count / measure(*args)


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    runs = runs_for(quick)
    say = progress or (lambda _: None)
    provider = _provider()
    tokens = QUICK_TOKENS if quick else TOKENS
    sessions = QUICK_SESSIONS if quick else SESSIONS
    back_to_back = QUICK_RUNS_BACK_TO_BACK if quick else RUNS_BACK_TO_BACK
    figures: list[Figure] = []
    try:
        say(f"{tokens:,} tokens through one session, tracing on / off, x {runs} runs")
        stats = compare(
            {
                mode: partial(_rate, tokens, streams, 1, tokens, mode, provider)
                for mode in ("on", "content", "off")
            },
            runs,
        )
        off = stats.pop("off")
        content = stats.pop("content")
        figures.append(
            Figure(
                benchmark=NAME,
                name="tracing.tokens",
                title=f"{tokens:,} tokens through one session to a lossless subscriber, traced",
                unit="tokens/s",
                kind="throughput",
                ours=stats.pop("on"),
                baselines={OFF: off},
                targets=(Target(f">= {TARGET_RATIO}x {OFF}", OFF, at_least=TARGET_RATIO),),
                notes=(
                    "open_runtime(observers=[SessionTracer(provider)]): the SDK's "
                    "TracerProvider, BatchSpanProcessor, an exporter that sends nothing. "
                    "The tracer subscribes to every event type but the streamed text."
                ),
            )
        )
        figures.append(
            Figure(
                benchmark=NAME,
                name="tracing.tokens_content",
                title=f"{tokens:,} tokens through one session, traced with content captured",
                unit="tokens/s",
                kind="throughput",
                ours=content,
                baselines={OFF: off},
                notes="SessionTracer(provider, capture_content=True): it reads every event.",
            )
        )
        say(f"{sessions:,} sessions x {SESSION_TOKENS} tokens at once, on / off, x {runs} runs")
        total = sessions * SESSION_TOKENS
        stats = compare(
            {
                mode: partial(_rate, total, streams, sessions, SESSION_TOKENS, mode, provider)
                for mode in ("on", "off")
            },
            runs,
        )
        figures.append(
            Figure(
                benchmark=NAME,
                name="tracing.sessions",
                title=f"{sessions:,} sessions streaming at once, traced: aggregate tokens/s",
                unit="tokens/s",
                kind="throughput",
                ours=stats.pop("on"),
                baselines={OFF: stats.pop("off")},
                targets=(Target(f">= {TARGET_RATIO}x {OFF}", OFF, at_least=TARGET_RATIO),),
                notes=f"{SESSION_TOKENS} tokens per session, one lossless subscriber each.",
            )
        )
        say(f"{back_to_back} runs with a tool call each, on / off, x {runs} runs")
        stats = compare(
            {
                mode: partial(_rate, back_to_back, tool_runs, back_to_back, mode, provider)
                for mode in ("on", "off")
            },
            runs,
        )
        figures.append(
            Figure(
                benchmark=NAME,
                name="tracing.tool_runs",
                title="runs back to back, a tool call each (4 spans a run), traced",
                unit="runs/s",
                kind="throughput",
                ours=stats.pop("on"),
                baselines={OFF: stats.pop("off")},
                notes="Each run: a model call with a calculator call, then an answer.",
            )
        )
    finally:
        provider.shutdown()
    return figures
