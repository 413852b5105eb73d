"""Baselines: what a user would run instead, measured in the same process and run.

- :class:`CallbackBus` — the seed's bus: ``publish`` appends to a 1,000-item history
  list (trimming the oldest) and calls every subscribed callback synchronously.  No
  seq, no reducer, no backpressure, no isolation: a slow callback stalls the producer
  and a raising one breaks it.
- :func:`asyncio_queue` — an ``asyncio.Queue(maxsize=1024)`` producer and consumer.
- :func:`naive_trio` — ``trio.open_memory_channel(1024)``, ``await send`` per event and
  ``async for`` on the other side.
- :func:`langgraph_stream` — LangGraph's token streaming, the framework most users would
  otherwise pick: a one-node ``StateGraph`` whose async node writes each token through
  ``langgraph.config.get_stream_writer()``, consumed with
  ``graph.astream(..., stream_mode="custom")`` (optional: needs ``langgraph``).

Each takes a producer-side ``make(i) -> event`` so that every variant builds the same
event objects per token as ours does, and returns the seconds the whole stream took.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable
from typing import Any, Final

import trio

__all__ = [
    "CallbackBus",
    "Counter",
    "asyncio_queue",
    "callback_bus",
    "langgraph_available",
    "langgraph_stream",
    "naive_trio",
]

HISTORY: Final = 1000
QUEUE_SIZE: Final = 1024
LANGGRAPH_YIELD_EVERY: Final = 256
"""Tokens the LangGraph node writes between two ``await asyncio.sleep(0)``: a model
node awaits its stream now and then (as ours yields when a subscriber's 256-event
buffer is full); it also bounds what LangGraph's unbounded stream queue holds."""


class CallbackBus:
    """The seed's event bus (about twenty lines, as it was)."""

    def __init__(self, history: int = HISTORY) -> None:
        self.history: list[Any] = []
        self.max_history = history
        self.callbacks: list[Callable[[Any], None]] = []

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def publish(self, event: Any) -> None:
        self.history.append(event)
        if len(self.history) > self.max_history:
            del self.history[0]
        for callback in self.callbacks:
            callback(event)


class Counter:
    """A subscriber callback: counts events and keeps the last one."""

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last: Any = None

    def __call__(self, event: Any) -> None:
        self.count += 1
        self.last = event


def callback_bus(n: int, callbacks: int, make: Callable[[int], Any]) -> float:
    """Seconds to publish ``n`` events through a :class:`CallbackBus` with
    ``callbacks`` counting callbacks (run from an async producer, as in the seed)."""
    bus = CallbackBus()
    counters = [Counter() for _ in range(callbacks)]
    for c in counters:
        bus.subscribe(c)

    async def producer() -> float:
        publish = bus.publish
        t0 = time.perf_counter()
        for i in range(n):
            publish(make(i))
        return time.perf_counter() - t0

    elapsed = trio.run(producer)
    assert all(c.count == n for c in counters)
    return elapsed


def asyncio_queue(n: int, make: Callable[[int], Any]) -> float:
    """Seconds to move ``n`` events through an ``asyncio.Queue(maxsize=1024)``."""

    async def main() -> float:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_SIZE)
        received = 0

        async def consumer() -> None:
            nonlocal received
            for _ in range(n):
                await queue.get()
                received += 1

        t0 = time.perf_counter()
        task = asyncio.create_task(consumer())
        for i in range(n):
            await queue.put(make(i))
        await task
        elapsed = time.perf_counter() - t0
        assert received == n
        return elapsed

    return asyncio.run(main())


def naive_trio(n: int, make: Callable[[int], Any]) -> float:
    """Seconds to move ``n`` events through ``trio.open_memory_channel(1024)``."""

    async def main() -> float:
        send, receive = trio.open_memory_channel[Any](QUEUE_SIZE)
        received = 0

        async def consumer() -> None:
            nonlocal received
            async with receive:
                async for _ in receive:
                    received += 1

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            async with send:
                for i in range(n):
                    await send.send(make(i))
        elapsed = time.perf_counter() - t0
        assert received == n
        return elapsed

    return trio.run(main)


def langgraph_available() -> bool:
    return importlib.util.find_spec("langgraph") is not None


def langgraph_stream(n: int, make: Callable[[int], Any]) -> float:
    """Seconds for ``graph.astream(..., stream_mode="custom")`` to deliver ``n`` tokens
    to one consumer, written by a one-node graph through ``get_stream_writer()``.

    The graph is compiled before the clock starts; the time covers the whole
    ``astream`` call (the graph run, every chunk through LangGraph's stream, the
    consumer's ``async for``).
    """
    from typing import TypedDict

    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        n: int

    async def model(state: State) -> dict[str, Any]:
        write = get_stream_writer()
        every = LANGGRAPH_YIELD_EVERY
        for i in range(state["n"]):
            write(make(i))
            if i % every == every - 1:
                await asyncio.sleep(0)
        return {}

    builder = StateGraph(State)
    builder.add_node("model", model)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    graph = builder.compile()

    async def main() -> float:
        received = 0
        t0 = time.perf_counter()
        async for _ in graph.astream({"n": n}, stream_mode="custom"):
            received += 1
        elapsed = time.perf_counter() - t0
        assert received == n, received
        return elapsed

    return asyncio.run(main())
