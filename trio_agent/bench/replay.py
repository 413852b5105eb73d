"""``replay``: a client reconnecting with ``after=0`` into a log of 100,000 events.

A bus whose log holds ``EVENTS`` token events (``EventLog(max_events=EVENTS)`` and a
byte budget large enough never to trim) is filled once.  Each run opens a subscription
with ``after=0`` and drains it with ``await receive_batch()`` until it has every event
(the replay cursor reads the log, then the subscription goes live): events/s replayed.

Baseline, same run, the same event objects: iterating a plain Python list of them — the
floor of any replay (no cursor, no filter, no batching, no scheduler), so the ratio
says what the subscription's replay path costs on top of reading memory.
"""

from __future__ import annotations

import time
from typing import Final

import trio

from trio_agent import events as ev
from trio_agent._bus import EventBus, EventLog

from ._common import Figure, Progress, compare, runs_for
from .bus import make_token

NAME: Final = "replay"
TITLE: Final = "Replay: reconnecting with after=0 into a 100,000-event log"

EVENTS: Final = 100_000
QUICK_EVENTS: Final = 100_000  # the log is built once; replaying it takes well under 1 s
MAX_BYTES: Final = 1 << 40
BASELINE: Final = "iterate a plain list of the same events"


def filled_bus(n: int) -> EventBus:
    """A bus whose log holds ``n`` events (run_started, thinking, then tokens)."""
    bus = EventBus("bench", log=EventLog(max_events=n, max_bytes=MAX_BYTES))
    bus.publish_nowait(ev.RunStarted(run=1))
    bus.publish_nowait(ev.Thinking(run=1, step=1))
    log = bus.log
    for i in range(n - 2):
        bus.publish_nowait(make_token(i, log.last_seq + 1))
    assert len(log) == n and log.first_seq == 1
    return bus


def ours(bus: EventBus) -> float:
    """Seconds to replay the whole log to a new ``after=0`` subscriber."""
    n = bus.log.last_seq

    async def main() -> float:
        t0 = time.perf_counter()
        got = 0
        last = 0
        async with bus.subscribe(after=0) as sub:
            receive_batch = sub.receive_batch
            while got < n:
                batch = await receive_batch()
                got += len(batch)
                last = batch[-1].seq
        elapsed = time.perf_counter() - t0
        assert got == n and last == n, (got, last)
        return elapsed

    return trio.run(main)


def plain_list(events: list[ev.Event]) -> float:
    """Seconds to iterate ``events`` once, counting them and keeping the last seq."""
    t0 = time.perf_counter()
    got = 0
    last = 0
    for e in events:
        got += 1
        last = e.seq
    elapsed = time.perf_counter() - t0
    assert got == len(events) and last == events[-1].seq
    return elapsed


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    n = QUICK_EVENTS if quick else EVENTS
    runs = runs_for(quick)
    say = progress or (lambda _: None)
    say(f"filling a log of {n:,} events")
    bus = filled_bus(n)
    events = list(bus.log)
    say(f"replaying {n:,} events with after=0, x {runs} runs")
    stats = compare(
        {"ours": lambda: n / ours(bus), BASELINE: lambda: n / plain_list(events)},
        runs,
    )
    return [
        Figure(
            benchmark=NAME,
            name="replay.after_0",
            title=f"replay of {n:,} events to a subscriber with after=0",
            unit="events/s",
            kind="throughput",
            ours=stats.pop("ours"),
            baselines=stats,
            notes=(
                f"EventLog(max_events={n:,}, max_bytes=2**40) holding {n:,} events; "
                "bus.subscribe(after=0) drained with await receive_batch() (the replay "
                "cursor reads the log, at most 65,536 events a batch) until the last seq. "
                "Baseline: a for loop over a list of the same events."
            ),
        )
    ]
