"""``bus``: token events through the whole publish path, against the baselines.

Ours: the producer publishes one token per event as the agent loop does,
``publish_token_nowait(run, step, text)`` (the bus builds the event already stamped,
by position: one construction), falling back to ``await publish_new`` when a
lossless subscriber is full — seq, log append (the default log bounds), reducer,
fan-out — to 1 and to 4 lossless subscribers, each draining with
``await receive_batch()``.  Baselines, same process, same run, the same event objects
built per token: the seed's callback bus with 1 and 4 counting callbacks, an
``asyncio.Queue(maxsize=1024)`` producer/consumer, and the naive trio loop
(``open_memory_channel(1024)``, ``await send`` / ``async for``), and (1 subscriber, when
``langgraph`` is installed) LangGraph's streaming: a node writing each token through
``get_stream_writer()``, one consumer of ``graph.astream(..., stream_mode="custom")``.

Also a per-event cost breakdown (ns per event, measured synchronously, no scheduler):
constructing the event (by keyword, as the baselines do, and by position, as the bus
does), stamping a copy (what publishing an unstamped event costs), reducing it,
appending it to the log, the clock, and ``publish_token_nowait`` as a whole with 0, 1
and 4 subscribers (drained by ``receive_batch_nowait``) — where the time of the hot
path goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Final

import trio

from trio_agent import DEFAULT_CAPACITY, EventBus, EventLog, Subscription, reduce
from trio_agent import events as ev

from . import baselines
from ._common import Figure, Progress, Stat, Target, compare, install_hint, repeat, runs_for

NAME: Final = "bus"
TITLE: Final = "Event bus throughput (token_stream events)"

EVENTS: Final = 1_000_000
QUICK_EVENTS: Final = 50_000
BREAKDOWN_EVENTS: Final = 200_000  # the per-event cost loops (at most this many)

_TEXT: Final = (
    "the quick brown fox jumps over the lazy dog and then some more tokens stream out of "
    "the model one at a time while the user watches every one of them arrive in order"
)
WORDS: Final[tuple[str, ...]] = tuple(f" {w}" for w in _TEXT.split(" "))
"""Token texts, cycled: short strings like a model's tokens."""

PUBLISH_TARGET_NS: Final = 1500
"""The whole synchronous publish of one token to one subscriber: at most 1.5 µs
(issue 11)."""

CALLBACK_PUBLISH: Final = "callback bus: construct + publish (1 callback)"

_MASK: Final = 31
assert len(WORDS) > _MASK


def make_token(i: int, seq: int = 0) -> ev.TokenStream:
    """The event the baselines build per token: the construction the bus makes in
    ``publish_new`` (all six fields given)."""
    return ev.TokenStream(
        session="bench", run=1, step=1, seq=seq, ts=time.time(), text=WORDS[i & _MASK]
    )


def new_bus() -> EventBus:
    """A bus in a state where ``token_stream`` is legal (run 1, step 1), with the
    default log bounds."""
    bus = EventBus("bench", log=EventLog())
    bus.publish_nowait(ev.RunStarted(run=1))
    bus.publish_nowait(ev.Thinking(run=1, step=1))
    return bus


def ours(n: int, subscribers: int) -> float:
    """Seconds to publish ``n`` events to ``subscribers`` lossless subscribers and for
    every subscriber to have received them all."""

    async def main() -> float:
        bus = new_bus()
        subs = [
            bus.open_subscription(capacity=DEFAULT_CAPACITY, policy="block")
            for _ in range(subscribers)
        ]
        counts = [0] * subscribers

        async def consume(k: int, sub: Subscription) -> None:
            got = 0
            receive_batch = sub.receive_batch
            while got < n:
                got += len(await receive_batch())
            counts[k] = got

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k, sub in enumerate(subs):
                nursery.start_soon(consume, k, sub)
            publish_token_nowait = bus.publish_token_nowait
            publish_new = bus.publish_new
            token = ev.TokenStream
            for i in range(n):
                text = WORDS[i & _MASK]
                try:
                    publish_token_nowait(1, 1, text)
                except trio.WouldBlock:
                    await publish_new(token, run=1, step=1, text=text)
        elapsed = time.perf_counter() - t0
        assert counts == [n] * subscribers, counts
        for sub in subs:
            sub.close()
        return elapsed

    return trio.run(main)


# ---- the per-event cost breakdown ---------------------------------------------------


def _ns_per_event(n: int, loop: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    loop()
    return (time.perf_counter() - t0) / n * 1e9


def _cost_construct(n: int) -> float:
    def loop() -> None:
        make = make_token
        for i in range(n):
            make(i)

    return _ns_per_event(n, loop)


def _cost_construct_by_position(n: int) -> float:
    def loop() -> None:
        new, clock = ev.TokenStream.new, time.time
        for i in range(n):
            new("bench", 1, 1, 0, clock(), WORDS[i & _MASK])

    return _ns_per_event(n, loop)


def _cost_stamp(n: int) -> float:
    events = [make_token(i) for i in range(64)]

    def loop() -> None:
        for i in range(n):
            events[i & 63].stamped("bench", i + 1, 0.0)

    return _ns_per_event(n, loop)


def _cost_clock(n: int) -> float:
    def loop() -> None:
        clock = time.time
        for _ in range(n):
            clock()

    return _ns_per_event(n, loop)


def _stamped(n: int) -> tuple[EventBus, list[ev.Event]]:
    bus = new_bus()
    first = bus.log.last_seq + 1
    return bus, [make_token(i, first + i) for i in range(n)]


def _cost_reduce(n: int) -> float:
    bus, events = _stamped(n)
    state = bus.state

    def loop() -> None:
        s = state
        for e in events:
            s = reduce(s, e)

    return _ns_per_event(n, loop)


def _cost_log_append(n: int) -> float:
    bus, events = _stamped(n)
    append = bus.log.append

    def loop() -> None:
        for e in events:
            append(e)

    return _ns_per_event(n, loop)


def _cost_publish(n: int, subscribers: int) -> float:
    bus = new_bus()
    subs = [bus.open_subscription(capacity=DEFAULT_CAPACITY) for _ in range(subscribers)]

    def loop() -> None:
        publish_token_nowait = bus.publish_token_nowait
        drain = [s.receive_batch_nowait for s in subs]
        for i in range(n):
            publish_token_nowait(1, 1, WORDS[i & _MASK])
            if i & 127 == 127:
                for d in drain:
                    d()
        for d in drain:
            d()

    return _ns_per_event(n, loop)


def _cost_callback_publish(n: int) -> float:
    bus = baselines.CallbackBus()
    bus.subscribe(baselines.Counter())

    def loop() -> None:
        publish = bus.publish
        make = make_token
        for i in range(n):
            publish(make(i))

    return _ns_per_event(n, loop)


def breakdown(n: int, runs: int) -> list[Figure]:
    """Per-event costs (ns/event) of the parts of the publish path."""
    parts: list[tuple[str, str, Callable[[], float], str]] = [
        (
            "construct",
            "construct a TokenStream",
            partial(_cost_construct, n),
            "by keyword, as the baselines build it: the generated __init__ and its checks",
        ),
        (
            "construct_by_position",
            "construct a TokenStream by position (TokenStream.new)",
            partial(_cost_construct_by_position, n),
            "how the bus builds the tokens it stamps: the same checks, no keyword parsing",
        ),
        ("clock", "time.time() (the stamp's ts)", partial(_cost_clock, n), ""),
        (
            "stamp",
            "Event.stamped (a copy with session/seq/ts)",
            partial(_cost_stamp, n),
            "what publishing an unstamped event costs (the agent loop never does)",
        ),
        (
            "reduce",
            "reduce(state, token_stream)",
            partial(_cost_reduce, n),
            "the transition lookup + _token (a State tuple copy + Text.append)",
        ),
        (
            "log_append",
            "EventLog.append (default bounds)",
            partial(_cost_log_append, n),
            "includes event_size and the amortized trim",
        ),
        (
            "publish_0",
            "publish_token_nowait, 0 subscribers",
            partial(_cost_publish, n, 0),
            "construct (stamped) + clock + reduce + log append + checks",
        ),
        (
            "publish_1",
            "publish_token_nowait + receive_batch_nowait, 1 subscriber",
            partial(_cost_publish, n, 1),
            "the whole synchronous path, the event's construction included, no scheduler",
        ),
        (
            "publish_4",
            "publish_token_nowait + receive_batch_nowait, 4 subscribers",
            partial(_cost_publish, n, 4),
            "",
        ),
    ]
    figures = []
    reference = repeat(partial(_cost_callback_publish, n), runs)
    for key, title, measure, notes in parts:
        stat = repeat(measure, runs)
        baselines_: dict[str, Stat] = {}
        targets: tuple[Target, ...] = ()
        if key.startswith("publish"):
            baselines_[CALLBACK_PUBLISH] = reference
        if key == "publish_1":
            targets = (Target(f"≤ {PUBLISH_TARGET_NS:,} ns per event", at_most=PUBLISH_TARGET_NS),)
        figures.append(
            Figure(
                benchmark=NAME,
                name=f"bus.cost.{key}",
                title=f"cost: {title}",
                unit="ns/event",
                kind="cost",
                ours=stat,
                baselines=baselines_,
                targets=targets,
                higher_is_better=False,
                notes=notes,
            )
        )
    return figures


# ---- the benchmark -------------------------------------------------------------------

CALLBACK_1: Final = "callback bus (1 callback)"
CALLBACK_4: Final = "callback bus (4 callbacks)"
ASYNCIO: Final = "asyncio.Queue(1024)"
NAIVE_TRIO: Final = "naive trio channel(1024)"
LANGGRAPH: Final = 'LangGraph astream(stream_mode="custom")'


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    n = QUICK_EVENTS if quick else EVENTS
    runs = runs_for(quick)
    say = progress or (lambda _: None)

    def rate(measure: Callable[[], float]) -> Callable[[], float]:
        return lambda: n / measure()

    say(f"1 subscriber vs baselines ({n:,} events x {runs} runs)")
    variants = {
        "ours": rate(partial(ours, n, 1)),
        CALLBACK_1: rate(partial(baselines.callback_bus, n, 1, make_token)),
        NAIVE_TRIO: rate(partial(baselines.naive_trio, n, make_token)),
        ASYNCIO: rate(partial(baselines.asyncio_queue, n, make_token)),
    }
    if baselines.langgraph_available():
        variants[LANGGRAPH] = rate(partial(baselines.langgraph_stream, n, make_token))
    one = compare(variants, runs)
    say(f"4 subscribers vs baselines ({n:,} events x {runs} runs)")
    four = compare(
        {
            "ours": rate(partial(ours, n, 4)),
            CALLBACK_4: rate(partial(baselines.callback_bus, n, 4, make_token)),
        },
        runs,
    )
    say("per-event cost breakdown")
    costs = breakdown(min(n, BREAKDOWN_EVENTS), runs)
    note = (
        f"{n:,} token_stream events; ours = seq + log (default bounds) + reduce + "
        "fan-out to lossless subscribers draining with receive_batch(); the producer "
        "calls publish_token_nowait, as the agent loop's token path does. "
        "Baselines build the same events and move them without seq/log/reducer."
    )
    return [
        Figure(
            benchmark=NAME,
            name="bus.1_subscriber",
            title="bus, 1 lossless subscriber",
            unit="events/s",
            kind="throughput",
            ours=one.pop("ours"),
            baselines=one,
            targets=(
                Target("≥ 1.0x the callback bus", CALLBACK_1, at_least=1.0),
                Target("≥ 3x the naive trio loop", NAIVE_TRIO, at_least=3.0),
                Target("≥ 3x LangGraph's stream", LANGGRAPH, at_least=3.0),
            ),
            notes=note
            + (
                f" LangGraph: a one-node StateGraph whose async node writes the same {n:,} "
                "events through get_stream_writer() (awaiting asyncio.sleep(0) every "
                f"{baselines.LANGGRAPH_YIELD_EVERY} tokens), consumed by one "
                'async for over graph.astream(..., stream_mode="custom").'
                if LANGGRAPH in one
                else " LangGraph not installed: its baseline was skipped "
                f"({install_hint('bench')})."
            ),
        ),
        Figure(
            benchmark=NAME,
            name="bus.4_subscribers",
            title="bus, 4 lossless subscribers",
            unit="events/s",
            kind="throughput",
            ours=four.pop("ours"),
            baselines=four,
            targets=(Target("≥ 0.5x the callback bus with 4 callbacks", CALLBACK_4, at_least=0.5),),
            notes=note,
        ),
        *costs,
    ]
