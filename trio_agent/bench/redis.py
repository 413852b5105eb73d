"""``redis``: the session log on Redis Streams, to a tail in another process.

Ours: a session of a runtime with ``log=open_redis_log(...)`` (a real ``redis-server``
on loopback, AOF on with ``appendfsync everysec``, started by
:mod:`trio_agent.bench._redis_server`; the log needs ``coredis``, the ``redis`` extra);
token events are published as a program of its own would (``Session.publish_nowait``,
falling back to ``await publish``: the bus stamps each); the relay appends them in
batches (one Lua script call per batch, ``XADD MAXLEN ~``); a child process tails the
stream (``XREAD BLOCK`` on its own connection) and says when it has the last one.
Baseline, same run: the in-memory bus to one lossless subscriber in the same process
(what a session does without Redis).

Latency: events paced at :data:`RATE`/s, each carrying ``time.monotonic()`` (one clock
for every process on Linux); the child takes the difference on arrival: publish →
durable on Redis → read by another process.  Baseline: publish → receive in-process on
the in-memory bus.

``python -m trio_agent.bench.redis`` runs it alone and prints the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Final

import trio

from trio_agent import EventBus, EventLog, Session
from trio_agent import events as ev

from ._common import (
    CHILD_CWD,
    Figure,
    Progress,
    Stat,
    Target,
    child_command,
    percentile,
    runs_for,
)
from ._redis_server import RedisServer

NAME: Final = "redis"
TITLE: Final = "Session log on Redis Streams, to a tail in another process"
REQUIRES: Final = {"coredis": "redis"}
"""Modules this benchmark imports beyond the base install → the extra installing them."""
PROGRAMS: Final = {"redis-server": "apt-get install redis-server"}
"""Programs it runs → how to install them."""

EVENTS: Final = 100_000
QUICK_EVENTS: Final = 10_000
RATE: Final = 500.0
"""Events/s of the latency measurement: a fast model's token rate."""
LATENCY_EVENTS: Final = 1_000
QUICK_LATENCY_EVENTS: Final = 300
BASELINE: Final = "in-memory bus"


def _redis_server() -> RedisServer:
    return RedisServer(appendfsync="everysec")


# ---- the child: a tail in another process ---------------------------------------------


async def _tail_main(url: str, prefix: str, session: str, after: int, last: int) -> None:
    from trio_agent.redis import open_redis_log

    latencies: list[float] = []
    async with open_redis_log(url, prefix=prefix) as log:
        await log.client.ping()
        print("ready", flush=True)
        with trio.CancelScope() as scope:

            async def take(batch: list[ev.Event]) -> None:
                now = time.monotonic()
                for e in batch:
                    if isinstance(e, ev.TokenStream) and e.text.startswith("@"):
                        latencies.append(now - float(e.text[1:]))
                if batch[-1].seq >= last:
                    scope.cancel()
                await trio.lowlevel.checkpoint()

            await log.tail_events(session, after, take)
    print(json.dumps({"done": time.monotonic(), "latencies": latencies}), flush=True)


class _Child:
    def __init__(self, url: str, prefix: str, session: str, after: int, last: int) -> None:
        self.proc = subprocess.Popen(
            child_command("redis", "--tail", url, prefix, session, str(after), str(last)),
            stdout=subprocess.PIPE,
            cwd=CHILD_CWD,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the tail process did not start: {line!r}")

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=30)
        return dict(out)


# ---- ours -------------------------------------------------------------------------------


def _prelude(bus: EventBus | Session) -> None:
    for e in (ev.UserInput(run=1, text="go"), ev.RunStarted(run=1), ev.Thinking(run=1, step=1)):
        bus.publish_nowait(e)


async def _publish(bus: EventBus | Session, text: str) -> None:
    event = ev.TokenStream(run=1, step=1, text=text)
    try:
        bus.publish_nowait(event)
    except trio.WouldBlock:
        await bus.publish(event)


def _redis_run(url: str, n: int, paced: bool) -> tuple[float, list[float]]:
    """Seconds from the first publish to the child having the last event; latencies."""
    import uuid

    from trio_agent import open_runtime
    from trio_agent.redis import open_redis_log

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {}

    async def main() -> None:
        async with (
            open_redis_log(url, prefix=prefix) as log,
            open_runtime(log=log) as runtime,
        ):
            session = await runtime.open_session("b")
            _prelude(session)
            child = await trio.to_thread.run_sync(_Child, url, prefix, "b", 0, n + 3)
            start = time.monotonic()
            for i in range(n):
                if paced:
                    await trio.sleep_until(trio.current_time() + 1 / RATE)
                    await _publish(session, f"@{time.monotonic()!r}")
                else:
                    await _publish(session, f" w{i & 31}")
                    if i % 64 == 63:
                        await trio.lowlevel.checkpoint()
            out = await trio.to_thread.run_sync(child.result)
            result["seconds"] = out["done"] - start
            result["latencies"] = out["latencies"]
            await log.client.delete([log.key("b", k) for k in ("log", "cmd", "owner")])

    trio.run(main)
    return float(result["seconds"]), list(result["latencies"])


def _memory_run(n: int, paced: bool) -> tuple[float, list[float]]:
    result: dict[str, Any] = {}

    async def main() -> None:
        bus = EventBus("b", log=EventLog())
        _prelude(bus)
        latencies: list[float] = []
        done = trio.Event()

        async def consume(task_status: trio.TaskStatus[None]) -> None:
            async with bus.subscribe() as sub:
                task_status.started()
                got = 0
                while got < n:
                    batch = await sub.receive_batch()
                    now = time.monotonic()
                    for e in batch:
                        if paced:
                            latencies.append(now - float(e.text[1:]))  # type: ignore[attr-defined]
                    got += len(batch)
                result["done"] = time.monotonic()
                done.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(consume)
            start = time.monotonic()
            for i in range(n):
                if paced:
                    await trio.sleep_until(trio.current_time() + 1 / RATE)
                    await _publish(bus, f"@{time.monotonic()!r}")
                else:
                    await _publish(bus, f" w{i & 31}")
                    if i % 64 == 63:
                        await trio.lowlevel.checkpoint()
            await done.wait()
        result["seconds"] = result["done"] - start
        result["latencies"] = latencies

    trio.run(main)
    return float(result["seconds"]), list(result["latencies"])


def run(quick: bool = False, progress: Progress | None = None) -> list[Figure]:
    runs = runs_for(quick)
    n = QUICK_EVENTS if quick else EVENTS
    m = QUICK_LATENCY_EVENTS if quick else LATENCY_EVENTS
    say = progress or (lambda _: None)
    server = _redis_server()
    with server:
        say(f"throughput: {n:,} events, Redis vs in-memory, {runs} runs")
        _redis_run(server.url, n // 10, False)  # warm-up
        ours_t, base_t = [], []
        for _ in range(runs):
            ours_t.append(n / _redis_run(server.url, n, False)[0])
            base_t.append(n / _memory_run(n, False)[0])
        say(f"latency: {m} events at {RATE:g}/s, {runs} runs")
        ours_l: list[float] = []
        base_l: list[float] = []
        ours_p99, base_p99 = [], []
        for _ in range(runs):
            lat = [x * 1000 for x in _redis_run(server.url, m, True)[1]]
            ours_l += lat
            ours_p99.append(percentile(lat, 99))
            blat = [x * 1000 for x in _memory_run(m, True)[1]]
            base_l += blat
            base_p99.append(percentile(blat, 99))
    throughput = Figure(
        benchmark=NAME,
        name="events_per_s",
        title="Events/s through the Redis-backed log to a tail in another process",
        unit="events/s",
        kind="throughput",
        ours=Stat(tuple(ours_t)),
        baselines={BASELINE: Stat(tuple(base_t))},
        targets=(Target("≥ 10,000 events/s", at_least=10_000.0),),
        notes=f"{n:,} token events; the relay appends in batches of up to 512 per script call",
    )
    latency = Figure(
        benchmark=NAME,
        name="latency_p99",
        title=f"Publish → tail in another process at {RATE:g} events/s, p99",
        unit="ms",
        kind="latency",
        ours=Stat(tuple(ours_p99)),
        baselines={BASELINE: Stat(tuple(base_p99))},
        higher_is_better=False,
        targets=(Target("p99 ≤ 10 ms", at_most=10.0),),
        percentiles={
            "p50": percentile(ours_l, 50),
            "p99": percentile(ours_l, 99),
            "baseline_p50": percentile(base_l, 50),
            "baseline_p99": percentile(base_l, 99),
        },
        notes="pooled percentiles over all runs; the baseline stays in one process",
    )
    return [throughput, latency]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tail"]:
        url, prefix, session, after, last = sys.argv[2:7]
        trio.run(_tail_main, url, prefix, session, int(after), int(last))
    else:
        for figure in run(quick="--quick" in sys.argv, progress=print):
            print(json.dumps(figure.to_dict(), indent=1))
