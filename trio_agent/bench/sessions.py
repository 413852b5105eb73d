"""``sessions``: many sessions streaming at once through one runtime, and idle sessions.

- **Aggregate throughput.**  ``SESSIONS`` sessions (quick: ``QUICK_SESSIONS``) in one
  runtime share one scripted model (no delay) that answers with ``TOKENS`` tokens; each
  session has one lossless subscriber draining with ``await receive_batch()``.  The
  clock runs from the first ``send`` to the last subscriber's ``done``; the figure is
  tokens received by all subscribers / seconds.  Target: ≥ 100,000 tokens/s.
- **Latency under that load.**  For every token, its receipt time (``time.time()`` when
  ``receive_batch`` returned) minus the event's ``ts`` (stamped when it was published):
  p99 per run, and the pooled percentiles.  Measured again at a paced rate (each
  session's model streams ``PACED_RATE`` tokens/s, as a live model does), where the
  latency is what the runtime adds rather than the length of a saturated queue.
- **Memory per idle session.**  ``IDLE`` sessions (quick: ``QUICK_IDLE``) opened in one
  runtime, no run, no subscriber: the growth of the Python heap (``tracemalloc``)
  divided by the count, in a fresh child process per run.  Target: ≤ 20 KiB each.
  The RSS growth per session is measured too (a separate child, without tracemalloc).

Baselines, same run, same token events (built with ``bus.make_token``) and the same
number of concurrent producer/consumer pairs: the naive trio loop (one
``open_memory_channel(1024)`` per session, ``await send`` / ``async for``) and one
``asyncio.Queue(1024)`` per session; for memory, a bare trio task parked on a
``trio.Event`` per session (the floor of any task-per-session design).
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from functools import partial
from typing import Any, Final, TypeAlias

import trio
import trio.testing

from . import baselines
from ._common import (
    CHILD_CWD,
    Figure,
    Progress,
    Stat,
    Target,
    child_command,
    latency_percentiles,
    percentile,
    runs_for,
)
from .bus import WORDS, make_token

NAME: Final = "sessions"
TITLE: Final = "Many sessions: aggregate tokens/s, latency, memory per idle session"

SESSIONS: Final = 1_000
QUICK_SESSIONS: Final = 100
TOKENS: Final = 200
"""Tokens per session per run (an answer's length): 200,000 tokens a run at 1,000."""
PACED_RATE: Final = 20.0
"""Tokens/s per session for the paced latency figure (a live model's pace)."""
PACED_TOKENS: Final = 40
QUICK_PACED_TOKENS: Final = 10
IDLE: Final = 10_000
QUICK_IDLE: Final = 1_000
IDLE_RUNS: Final = 3
"""Child processes per idle-memory variant (the traced heap barely varies)."""
TARGET_TOKENS_PER_S: Final = 100_000.0
TARGET_IDLE_KIB: Final = 20.0
TIMEOUT: Final = 600.0

NAIVE_TRIO: Final = "naive trio channel(1024) per session"
ASYNCIO: Final = "asyncio.Queue(1024) per session"
BARE_TASK: Final = "bare trio task parked on an Event"

Result: TypeAlias = "tuple[float, array[float]]"
"""Seconds the whole stream took, and the latency of every token in ms."""


# ---- ours -------------------------------------------------------------------------------


def _script(tokens: int, delay: float) -> dict[str, Any]:
    from trio_agent.testing import ScriptBuilder

    script: dict[str, Any] = (
        ScriptBuilder().turn(tokens=[WORDS[i & 31] for i in range(tokens)], delay=delay).build()
    )
    return script


def ours(sessions: int, tokens: int, delay: float = 0.0) -> Result:
    """``sessions`` sessions each streaming ``tokens`` tokens to one subscriber."""
    from trio_agent import DEFAULT_MAX_SESSIONS, open_runtime
    from trio_agent.testing import ScriptedModel

    model = ScriptedModel(_script(tokens, delay))

    async def main() -> Result:
        latencies: array[float] = array("d")
        counts = [0] * sessions
        async with open_runtime(
            model=model, max_sessions=max(sessions, DEFAULT_MAX_SESSIONS)
        ) as runtime:
            opened = [await runtime.open_session(f"s{k}") for k in range(sessions)]
            subs = [s.open_subscription() for s in opened]

            async def consume(k: int) -> None:
                receive_batch = subs[k].receive_batch
                add = latencies.append
                got = 0
                while True:
                    batch = await receive_batch()
                    now = time.time()
                    for e in batch:
                        kind = e.type
                        if kind == "token_stream":
                            add((now - e.ts) * 1000)
                            got += 1
                        elif kind == "done":
                            counts[k] = got
                            return

            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for k in range(sessions):
                    nursery.start_soon(consume, k)
                for s in opened:
                    await s.send("go")
            elapsed = time.perf_counter() - t0
            for sub in subs:
                sub.close()
        if counts != [tokens] * sessions:
            raise RuntimeError(f"sessions: a subscriber missed tokens: {sorted(set(counts))}")
        return elapsed, latencies

    return trio.run(main)


# ---- baselines ----------------------------------------------------------------------------


def naive_trio(sessions: int, tokens: int, delay: float = 0.0) -> Result:
    """One ``open_memory_channel(1024)`` and producer/consumer pair per session."""

    async def main() -> Result:
        latencies: array[float] = array("d")
        received = 0

        async def produce(send: trio.MemorySendChannel[Any]) -> None:
            async with send:
                for i in range(tokens):
                    if delay and i:
                        await trio.sleep(delay)
                    await send.send(make_token(i))

        async def consume(receive: trio.MemoryReceiveChannel[Any]) -> None:
            nonlocal received
            add = latencies.append
            async with receive:
                async for e in receive:
                    add((time.time() - e.ts) * 1000)
                    received += 1

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(sessions):
                send, receive = trio.open_memory_channel[Any](baselines.QUEUE_SIZE)
                nursery.start_soon(consume, receive)
                nursery.start_soon(produce, send)
        elapsed = time.perf_counter() - t0
        assert received == sessions * tokens, received
        return elapsed, latencies

    return trio.run(main)


def asyncio_queues(sessions: int, tokens: int, delay: float = 0.0) -> Result:
    """One ``asyncio.Queue(1024)`` and producer/consumer pair per session."""

    async def main() -> Result:
        latencies: array[float] = array("d")
        received = 0

        async def produce(queue: asyncio.Queue[Any]) -> None:
            for i in range(tokens):
                if delay and i:
                    await asyncio.sleep(delay)
                await queue.put(make_token(i))

        async def consume(queue: asyncio.Queue[Any]) -> None:
            nonlocal received
            add = latencies.append
            for _ in range(tokens):
                e = await queue.get()
                add((time.time() - e.ts) * 1000)
                received += 1

        t0 = time.perf_counter()
        tasks = []
        for _ in range(sessions):
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=baselines.QUEUE_SIZE)
            tasks.append(asyncio.create_task(consume(queue)))
            tasks.append(asyncio.create_task(produce(queue)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        assert received == sessions * tokens, received
        return elapsed, latencies

    return asyncio.run(main())


# ---- idle sessions (a child process per run) ------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure_idle(variant: str, n: int, trace: bool) -> dict[str, Any]:
    """Open ``n`` idle sessions (``ours``) or park ``n`` bare tasks (``task``) in this
    process; the growth of the traced heap (``trace``) or of the RSS, per item, in
    bytes."""
    from trio_agent import open_runtime

    async def main() -> dict[str, Any]:
        async with trio.open_nursery() as outer:
            if variant == "ours":
                async with open_runtime(max_sessions=max(n, 1)) as runtime:
                    await runtime.open_session("warm-up")
                    gc.collect()
                    before = _measure(trace)
                    for k in range(n - 1):
                        await runtime.open_session(f"s{k}")
                    gc.collect()
                    after = _measure(trace)
                    assert len(runtime.sessions) == n
                    outer.cancel_scope.cancel()
            else:
                event = trio.Event()
                gc.collect()
                before = _measure(trace)
                for _ in range(n - 1):
                    outer.start_soon(event.wait)
                await trio.testing.wait_all_tasks_blocked()
                gc.collect()
                after = _measure(trace)
                event.set()
        return {"variant": variant, "n": n, "bytes_per_item": (after - before) / (n - 1)}

    if trace:
        tracemalloc.start()
    return trio.run(main)


def _measure(trace: bool) -> float:
    if trace:
        return float(tracemalloc.get_traced_memory()[0])
    return float(_rss_kib() * 1024)


def _idle_child(variant: str, n: int, trace: bool) -> float:
    proc = subprocess.run(
        child_command("sessions", "idle", variant, str(n), str(int(trace))),
        capture_output=True,
        cwd=CHILD_CWD,
        timeout=TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"idle-session child ({variant}) failed: {proc.stderr.decode(errors='replace')}"
        )
    return float(json.loads(proc.stdout)["bytes_per_item"]) / 1024


# ---- the figures ------------------------------------------------------------------------


def _round_robin(
    variants: dict[str, Callable[[], Result]], runs: int
) -> dict[str, tuple[list[float], list[float], array[float]]]:
    """Per variant: the seconds of each run, the p99 of each run (ms), pooled latencies."""
    for measure in variants.values():  # warm-up
        gc.collect()
        measure()
    out: dict[str, tuple[list[float], list[float], array[float]]] = {
        name: ([], [], array("d")) for name in variants
    }
    for _ in range(runs):
        for name, measure in variants.items():
            gc.collect()
            seconds, lat = measure()
            out[name][0].append(seconds)
            out[name][1].append(percentile(sorted(lat), 99))
            out[name][2].extend(lat)
    return out


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    runs = runs_for(quick)
    say = progress or (lambda _: None)
    n = QUICK_SESSIONS if quick else SESSIONS
    idle = QUICK_IDLE if quick else IDLE
    paced_tokens = QUICK_PACED_TOKENS if quick else PACED_TOKENS
    total = n * TOKENS
    scale = " (quick: scaled down)" if quick else ""

    say(f"{n:,} sessions x {TOKENS} tokens at full speed, x {runs} runs")
    full = _round_robin(
        {
            "ours": partial(ours, n, TOKENS),
            NAIVE_TRIO: partial(naive_trio, n, TOKENS),
            ASYNCIO: partial(asyncio_queues, n, TOKENS),
        },
        runs,
    )
    say(f"{n:,} sessions at {PACED_RATE:g} tokens/s each, x {runs} runs")
    delay = 1 / PACED_RATE
    paced = _round_robin(
        {
            "ours": partial(ours, n, paced_tokens, delay),
            NAIVE_TRIO: partial(naive_trio, n, paced_tokens, delay),
        },
        runs,
    )
    idle_runs = min(runs, IDLE_RUNS)
    say(f"memory of {idle:,} idle sessions (child processes), x {idle_runs} runs")
    heap: dict[str, list[float]] = {"ours": [], BARE_TASK: []}
    rss: dict[str, list[float]] = {"ours": [], BARE_TASK: []}
    for _ in range(idle_runs):
        for label, variant in (("ours", "ours"), (BARE_TASK, "task")):
            heap[label].append(_idle_child(variant, idle, True))
            rss[label].append(_idle_child(variant, idle, False))

    def throughput_stat(seconds: list[float], tokens: int) -> Stat:
        return Stat(tuple(tokens / s for s in seconds))

    def p99_stat(p99s: list[float]) -> Stat:
        return Stat(tuple(p99s))

    note = (
        f"{n:,} sessions in one runtime{scale}, one scripted model (no delay) answering "
        f"{TOKENS} tokens each, one lossless subscriber per session draining with "
        "receive_batch(); clock from the first send to the last done. Baselines: as many "
        "producer/consumer pairs, each moving the same token events."
    )
    figures = [
        Figure(
            benchmark=NAME,
            name="sessions.aggregate",
            title=f"aggregate tokens/s, {n:,} sessions streaming at once",
            unit="tokens/s",
            kind="throughput",
            ours=throughput_stat(full["ours"][0], total),
            baselines={
                label: throughput_stat(full[label][0], total) for label in (NAIVE_TRIO, ASYNCIO)
            },
            targets=(Target("≥ 100,000 tokens/s", at_least=TARGET_TOKENS_PER_S),),
            notes=note,
        ),
        Figure(
            benchmark=NAME,
            name="sessions.full_speed.p99",
            title=f"publish → subscriber latency, {n:,} sessions at full speed, p99",
            unit="ms",
            kind="latency",
            higher_is_better=False,
            ours=p99_stat(full["ours"][1]),
            baselines={label: p99_stat(full[label][1]) for label in (NAIVE_TRIO, ASYNCIO)},
            percentiles=latency_percentiles(full["ours"][2]),
            notes=(
                "receipt time (time.time() when receive_batch returned) minus the event's "
                "ts, every token; at saturation this is mostly the time a token waits for "
                "its consumer's turn on the one thread (a scheduler round over every "
                "session), not work done for it"
            ),
        ),
        Figure(
            benchmark=NAME,
            name="sessions.paced.p99",
            title=(
                f"publish → subscriber latency, {n:,} sessions at {PACED_RATE:g} tokens/s each, p99"
            ),
            unit="ms",
            kind="latency",
            higher_is_better=False,
            ours=p99_stat(paced["ours"][1]),
            baselines={NAIVE_TRIO: p99_stat(paced[NAIVE_TRIO][1])},
            percentiles=latency_percentiles(paced["ours"][2]),
            notes=(
                f"{paced_tokens} tokens per session, the scripted model sleeping "
                f"{delay * 1000:g} ms between tokens ({n * PACED_RATE:,.0f} tokens/s offered "
                f"in all); achieved: ours {n * paced_tokens / _median(paced['ours'][0]):,.0f} "
                f"tokens/s, naive trio {n * paced_tokens / _median(paced[NAIVE_TRIO][0]):,.0f} "
                f"tokens/s (a run lasts at least {(paced_tokens - 1) * delay:g} s). Each "
                "token is a timer wake-up of the model and a wake-up of its consumer: "
                "no batching at this pace"
            ),
        ),
        Figure(
            benchmark=NAME,
            name="sessions.idle_memory",
            title=f"memory per idle session ({idle:,} open, traced Python heap)",
            unit="KiB",
            kind="memory",
            higher_is_better=False,
            ours=Stat(tuple(heap["ours"])),
            baselines={BARE_TASK: Stat(tuple(heap[BARE_TASK]))},
            targets=(Target("≤ 20 KiB per idle session", at_most=TARGET_IDLE_KIB),),
            notes=(
                f"{idle:,} sessions{scale} opened with runtime.open_session (no run, no "
                "subscriber), tracemalloc growth / count, fresh child process per run "
                f"({idle_runs} runs); "
                "RSS growth / count in a child without tracemalloc: "
                f"ours {_median(rss['ours']):.1f} KiB, bare task "
                f"{_median(rss[BARE_TASK]):.1f} KiB"
            ),
        ),
    ]
    return figures


def _median(values: list[float]) -> float:
    return Stat(tuple(values)).median


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "idle":
        _, variant, n, trace = argv
        sys.stdout.write(json.dumps(measure_idle(variant, int(n), trace == "1")))
        return 0
    if argv in ([], ["--quick"]):
        for figure in run(quick=bool(argv), progress=lambda what: print(what, file=sys.stderr)):
            print(json.dumps(figure.to_dict(), indent=1))
        return 0
    print(
        "usage: python -m trio_agent.bench.sessions [--quick] | idle VARIANT N TRACE",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
