"""``approval``: the round trip of a tool call that waits for a person (DESIGN §9).

A scripted model calls a tool that needs approval, run after run.  A WebSocket client
(trio-websocket, in this process, over loopback) answers each ``tool_approval_requested``
with ``{"op": "approve"}`` the moment it arrives.  The figure is the time from the
request's publication (its ``ts``, the bus clock) to the tool's first line running
(``time.time()`` in the tool): the pump, the frame, the client, its command, the
session deciding it, the call's wait waking up, the tool starting.  In memory, and on
Redis (``open_runtime(log=open_redis_log(...))``: the request is shown once durable,
the decision applied once durable), p50 and p99 over every round trip.

Baseline, same run, same client and server machinery: a WebSocket ping-pong (the
server sends a frame, the client answers, the server reads the answer) — the floor of
any decision that travels to a client and back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import orjson
import trio

import trio_agent
from trio_agent.testing import ScriptBuilder

from ._common import Figure, Progress, Stat, Target, latency_percentiles, percentile, runs_for

NAME: Final = "approval"
TITLE: Final = "Approval round trip: request published → decision → tool started"
PROGRAMS: Final = {"redis-server": "apt-get install redis-server"}
"""The Redis variant starts a real redis-server (skipped as a whole without it)."""

ROUNDS: Final = 200
QUICK_ROUNDS: Final = 40
BASELINE: Final = "WebSocket ping-pong, same server"
TARGET_MS: Final = 5.0
"""A person's click is not waiting for us: the machinery's share of the round trip
should be lost in the network's (a few ms on a LAN)."""

_STARTED: list[float] = []


@trio_agent.tool(approval=True)
async def mark() -> float:
    """A tool that notes when it began (needs approval)."""
    started = time.time()
    _STARTED.append(started)
    return started


def _script(rounds: int) -> ScriptBuilder:
    builder = ScriptBuilder()
    for i in range(rounds):
        builder = builder.turn(tool_calls=[{"id": f"m{i}", "name": "mark", "arguments": {}}])
        builder = builder.turn(["ok"])
    return builder


@asynccontextmanager
async def _served(log: Any, rounds: int) -> AsyncIterator[int]:
    async with (
        trio_agent.open_runtime(model=_script(rounds).model(), tools=[mark], log=log) as rt,
        trio.open_nursery() as nursery,
    ):
        # The client answers as fast as it can: the per-connection command rate (meant
        # for a person's clicks) would throttle the measurement, not what it measures.
        limits = trio_agent.ServerLimits(command_rate=1e6, command_burst=1_000_000)
        server = trio_agent.AgentServer(rt, limits=limits)
        yield await nursery.start(server.serve, "127.0.0.1", 0)
        nursery.cancel_scope.cancel()


async def _round_trips(port: int, rounds: int, session: str) -> list[float]:
    """Milliseconds from each request's ts to its tool's start."""
    from trio_websocket import open_websocket_url

    _STARTED.clear()
    latencies: list[float] = []
    url = f"ws://127.0.0.1:{port}/sessions/{session}"
    async with open_websocket_url(url, max_message_size=1 << 24) as ws:
        await ws.get_message()  # the snapshot
        for i in range(rounds):
            await ws.send_message(orjson.dumps({"op": "user_input", "text": str(i)}).decode())
            requested: float | None = None
            while True:
                for e in orjson.loads(await ws.get_message()):
                    if e["type"] == "tool_approval_requested":
                        requested = e["ts"]
                        command = {"op": "approve", "call_id": e["call_id"], "approved": True}
                        await ws.send_message(orjson.dumps(command).decode())
                    elif e["type"] == "done":
                        assert requested is not None and len(_STARTED) == i + 1
                        latencies.append((_STARTED[i] - requested) * 1000)
                        break
                else:
                    continue
                break
    return latencies


def _ours(rounds: int, redis_url: str | None) -> list[float]:
    async def main() -> list[float]:
        if redis_url is None:
            async with _served(None, rounds) as port:
                return await _round_trips(port, rounds, "a")
        from trio_agent.redis import open_redis_log

        prefix = f"bench-{time.monotonic_ns()}"
        async with open_redis_log(redis_url, prefix=prefix) as log, _served(log, rounds) as port:
            return await _round_trips(port, rounds, "a")

    return trio.run(main)


def _ping_pong(rounds: int) -> list[float]:
    """Milliseconds for a frame to a client and its answer back (trio-websocket)."""
    from trio_websocket import open_websocket_url, serve_websocket

    async def main() -> list[float]:
        latencies: list[float] = []
        finished = trio.Event()

        async def handler(request: Any) -> None:
            ws = await request.accept()
            for _ in range(rounds):
                t0 = time.time()
                await ws.send_message('[{"type": "ping"}]')
                await ws.get_message()
                latencies.append((time.time() - t0) * 1000)
            finished.set()

        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            port = server.port
            async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
                for _ in range(rounds):
                    await ws.get_message()
                    await ws.send_message('{"op": "pong"}')
            await finished.wait()  # (the handler's last read)
            nursery.cancel_scope.cancel()
        return latencies

    return trio.run(main)


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    from ._redis_server import RedisServer

    say = progress or (lambda _: None)
    runs = runs_for(quick)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    figures: list[Figure] = []
    server = RedisServer(appendfsync="everysec")
    server.start()
    try:
        for where, url in (("memory", None), ("redis", server.url)):
            say(f"{where}: warm-up")
            _ours(min(rounds, 20), url)
            ours_p99: list[float] = []
            base_p99: list[float] = []
            pooled: list[float] = []
            for r in range(runs):
                say(f"{where}: {rounds} approvals, run {r + 1}/{runs}")
                lat = _ours(rounds, url)
                pooled += lat
                ours_p99.append(percentile(lat, 99))
                base_p99.append(percentile(_ping_pong(rounds), 99))
            figures.append(
                Figure(
                    benchmark=NAME,
                    name=f"approval.{where}.p99",
                    title=f"approval round trip over the WebSocket, {where}, p99",
                    unit="ms",
                    kind="latency",
                    ours=Stat(tuple(ours_p99)),
                    baselines={BASELINE: Stat(tuple(base_p99))},
                    higher_is_better=False,
                    targets=(Target(f"p99 ≤ {TARGET_MS:g} ms", at_most=TARGET_MS),),
                    percentiles=latency_percentiles(pooled),
                    notes=(
                        f"{rounds} runs per sample, each one call of a tool that needs "
                        "approval, approved by a client the moment the request arrives; "
                        "from the request's ts to the tool's start"
                        + ("; the session on a real redis-server (AOF everysec)" if url else "")
                    ),
                )
            )
    finally:
        server.stop()
    return figures
