"""``mcp``: a tool of an MCP server against the same function as a local tool (issue 14).

The server is :mod:`trio_agent.bench._mcp_server` (the SDK's ``MCPServer``), a child
process, over stdio and over streamable HTTP (uvicorn, on a free loopback port).

- **Round trip.**  ``add(a, b)`` called through the runtime's executor
  (``execute_tool``: argument validation against the schema, the limiter, the timeout),
  one call after another: as an MCP tool (a request to the server and its answer, the
  result made of the server's content) and, the baselines, the very same function as a
  local tool of the same runtime (a sync function: a worker thread), and the SDK's own
  ``Client.call_tool`` to the same server (what the runtime adds to the SDK).  Per
  call, ``perf_counter`` around the await; p50 and p99.
- **Hard interrupt of an MCP call in flight.**  A fresh session per trial; the scripted
  model calls the server's ``wait(60)``; once its first progress notification has
  arrived (the call is running on the server), ``interrupt("hard")``; latency =
  ``interrupted.ts`` minus ``time.time()`` just before the interrupt (as in the
  ``interrupt`` benchmark).  The SDK tells the server from the connection's own task;
  the step does not wait for that.  Baseline, same runtime, same run: a local tool that
  sleeps (``trio.sleep``), interrupted the same way once it runs.  Target: p99 within
  2× of the local tool's.

The trials are split into runs (5, quick 3), the variants measured round-robin; each
figure's samples are the per-run percentiles, its headline the pooled percentile.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

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

NAME: Final = "mcp"
TITLE: Final = "MCP tools: round trip and hard interrupt"
REQUIRES: Final = {"mcp": "mcp"}
"""Modules this benchmark imports beyond the base install → the extra installing them."""

CALLS: Final = {"stdio": 2_000, "http": 300}
"""Round trips per transport (the SDK's streamable HTTP takes tens of ms a call)."""
QUICK_CALLS: Final = {"stdio": 200, "http": 60}
TRIALS: Final = 500
QUICK_TRIALS: Final = 60
TIMEOUT: Final = 60.0
LOCAL: Final = "the same function as a local tool"
SDK: Final = "the SDK's own Client, same server"
LOCAL_SLOW: Final = "a local tool that sleeps"
TARGET_RATIO: Final = 2.0


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def _nap(seconds: float) -> str:
    """Sleep (the local tool interrupted in the baseline)."""
    await trio.sleep(seconds)
    return "napped"


def _model(tool: str) -> Any:
    """A scripted model whose first turn calls ``tool`` (every session plays it)."""
    from trio_agent.testing import ScriptBuilder

    call = {"id": "w", "name": tool, "arguments": {"seconds": 60}}
    return ScriptBuilder().turn(tool_calls=[call]).turn(tokens=["done"]).model()


@asynccontextmanager
async def _runtimes(transport: str) -> AsyncIterator[tuple[Any, Any, Any]]:
    """Two runtimes: the server's tools (its ``add`` prefixed ``bench_``, as the local
    ``add`` has the name) with a model calling its ``wait``; the local ``nap`` with a
    model calling it.  And the SDK's own client of the same server (over stdio: of
    another process of it)."""
    from mcp import Client, StdioServerParameters

    import trio_agent
    from trio_agent.tools import McpServer

    local_add = trio_agent.tool(name="add")(add)
    nap = trio_agent.tool(name="nap")(_nap)
    proc: trio.Process | None = None
    if transport == "stdio":
        argv = child_command("_mcp_server")
        server = McpServer(command=argv, cwd=str(CHILD_CWD), name="bench")
        client = Client(
            StdioServerParameters(command=argv[0], args=argv[1:], cwd=CHILD_CWD), cache=None
        )
    else:
        proc = await trio.lowlevel.open_process(
            child_command("_mcp_server", "--http"), stdout=subprocess.PIPE, cwd=CHILD_CWD
        )
        assert proc.stdout is not None
        first = b""
        with trio.fail_after(TIMEOUT):
            while not first.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(64)
                if not chunk:
                    raise RuntimeError("the benchmark's MCP server exited before it listened")
                first += chunk
        server = McpServer(url=f"http://127.0.0.1:{int(first)}/mcp", name="bench")
        client = Client(str(server.url), cache=None)
    try:
        remote = trio_agent.open_runtime(
            model=_model("wait"), tools=[local_add], mcp=[server], max_sessions=10 * TRIALS
        )
        here = trio_agent.open_runtime(model=_model("nap"), tools=[nap])
        async with remote as with_mcp, here as without, client:  # (bounded: connect_timeout)
            yield with_mcp, without, client
    finally:
        if proc is not None:
            proc.terminate()
            with trio.CancelScope(shield=True), trio.move_on_after(TIMEOUT):
                await proc.wait()


async def _round_trips(runtime: Any, name: str, calls: int) -> list[float]:
    from trio_agent.tools import execute_tool

    registry, limiter = runtime.registry, runtime.limiter
    out = []
    for i in range(calls):
        arguments = {"a": i, "b": 1}
        t0 = time.perf_counter()
        outcome = await execute_tool(registry, name, arguments, limiter=limiter, timeout=TIMEOUT)
        out.append(time.perf_counter() - t0)
        if outcome.status != "ok":
            raise RuntimeError(f"{name}: {outcome.error}")
    return out


async def _sdk_round_trips(client: Any, calls: int) -> list[float]:
    out = []
    for i in range(calls):
        t0 = time.perf_counter()
        result = await client.call_tool("add", {"a": i, "b": 1})
        out.append(time.perf_counter() - t0)
        if result.is_error:
            raise RuntimeError(f"the SDK's call of add failed: {result.content}")
    return out


async def _interrupt(runtime: Any, waited_for: str, n: int) -> float:
    """Seconds from ``interrupt("hard")`` to ``interrupted``, once the first event of
    type ``waited_for`` says the call runs."""
    session = await runtime.open_session(f"t{n}")
    latency = 0.0
    async with session.subscribe(after=0) as events:
        await session.send("go")
        with trio.fail_after(TIMEOUT):
            async for e in events:
                if e.type == waited_for:
                    break
            t0 = time.time()
            await session.interrupt("hard", reason="bench")
            async for e in events:
                if e.type == "interrupted":
                    latency = e.ts - t0
                    break
    await session.aclose()
    return latency


Samples = dict[str, list[list[float]]]


def _measure(transport: str, calls: int, trials: int, runs: int, say: Progress) -> Samples:
    async def main() -> Samples:
        out: Samples = {k: [] for k in ("mcp", "local", "sdk", "mcp_int", "local_int")}
        async with _runtimes(transport) as (with_mcp, without, client):
            say(f"{transport}: warm-up")
            await _round_trips(with_mcp, "bench_add", 20)
            await _round_trips(with_mcp, "add", 20)
            await _sdk_round_trips(client, 20)
            await _interrupt(with_mcp, "tool_progress", -1)
            await _interrupt(without, "tool_call", -1)
            for r in range(runs):
                say(f"{transport}: round trips and interrupts — run {r + 1}/{runs}")
                out["local"].append(await _round_trips(with_mcp, "add", calls))
                out["mcp"].append(await _round_trips(with_mcp, "bench_add", calls))
                out["sdk"].append(await _sdk_round_trips(client, calls))
                local, remote = [], []
                for t in range(trials):
                    local.append(await _interrupt(without, "tool_call", r * trials + t))
                    remote.append(await _interrupt(with_mcp, "tool_progress", r * trials + t))
                out["local_int"].append(local)
                out["mcp_int"].append(remote)
        return out

    return trio.run(main)


def _figure(
    name: str,
    title: str,
    unit: str,
    scale: float,
    ours: list[list[float]],
    baselines: dict[str, list[list[float]]],
    p: float,
    targets: tuple[Target, ...] = (),
) -> Figure:

    def stat(runs: list[list[float]]) -> Stat:
        pooled = [x * scale for run in runs for x in run]
        per_run = tuple(percentile([x * scale for x in run], p) for run in runs)
        return Stat(per_run, headline=percentile(pooled, p))

    pooled = [x * scale for run in ours for x in run]
    pcts = {f"p{q:g}": percentile(pooled, q) for q in (50, 90, 99)}
    return Figure(
        benchmark=NAME,
        name=name,
        title=title,
        unit=unit,
        kind="latency",
        higher_is_better=False,
        ours=stat(ours),
        baselines={label: stat(runs) for label, runs in baselines.items()},
        targets=targets,
        percentiles={**pcts, "max": max(pooled)},
        notes=f"{len(pooled):,} samples in {len(ours)} runs",
    )


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    say: Callable[[str], None] = progress or (lambda _: None)
    runs = runs_for(quick)
    trials = max(1, (QUICK_TRIALS if quick else TRIALS) // runs)
    figures = []
    target = Target(
        f"p99 ≤ {TARGET_RATIO:g}× the local tool's", baseline=LOCAL_SLOW, at_most=TARGET_RATIO
    )
    for transport in ("stdio", "http"):
        calls = (QUICK_CALLS if quick else CALLS)[transport] // runs
        m = _measure(transport, calls, trials, runs, say)
        for p in (50, 99):
            figures.append(
                _figure(
                    f"mcp.{transport}.round_trip.p{p}",
                    f"MCP tool call → result over {transport}, p{p}",
                    "µs",
                    1e6,
                    m["mcp"],
                    {LOCAL: m["local"], SDK: m["sdk"]},
                    p,
                )
            )
        figures.append(
            _figure(
                f"mcp.{transport}.interrupt.p99",
                f"hard interrupt → interrupted, MCP call in flight over {transport}, p99",
                "ms",
                1e3,
                m["mcp_int"],
                {LOCAL_SLOW: m["local_int"]},
                99,
                (target,),
            )
        )
    return figures
