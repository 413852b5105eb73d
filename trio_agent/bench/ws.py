"""``ws``: tokens delivered over WebSocket to a client in another process.

- **Throughput.**  A scripted model streams ``n`` tokens as fast as it can; our server
  (:func:`trio_agent.transports.serve_websocket`) sends them to a plain ``websockets``
  client running in a separate process, which checks the text exactly and reports
  tokens per second from its ``user_input`` to the last token.  Baseline, measured in
  the same run with the same client: an asyncio ``websockets`` server that sends one
  message per token (the naive transport).  Ours drains what is waiting into one frame
  and merges consecutive tokens (DESIGN §1), so under load frames grow and the count
  of messages falls.  Target: at least 3× the baseline.
- **Added latency at a low rate.**  The model streams 100 tokens/s; the client
  measures, for each token, its arrival time minus the event's ``ts`` (stamped by the
  bus when the token was published; both processes read the same system clock).  So
  the figure is what the transport adds: the pump, the encoding, the socket, the
  client's decoding.  Target: p99 at most 2 ms.  The baseline server, sending each
  token the moment it is made, is measured the same way for comparison.

The client is this module run as ``python -m trio_agent.bench.ws client URL MODE N``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from functools import partial
from typing import Any, Final

import orjson
import trio

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

NAME: Final = "ws"
TITLE: Final = "WebSocket transport: tokens/s and added latency"
REQUIRES: Final = {"websockets": "bench"}
"""Modules this benchmark imports beyond the base install → the extra installing them."""

TOKENS: Final = 100_000
QUICK_TOKENS: Final = 20_000
RATE: Final = 100.0
"""Tokens per second for the latency figure."""
LATENCY_TOKENS: Final = 1_000
QUICK_LATENCY_TOKENS: Final = 100
"""The smoke run's (--quick): a second a run at RATE, enough to check the path and the
percentiles, not to judge them."""
BASELINE: Final = "websockets (asyncio), one message per token"
TIMEOUT: Final = 300.0


def token(i: int) -> str:
    return f"t{i} "


# ---- the client (a separate process) --------------------------------------------------


async def _client(url: str, mode: str, n: int) -> dict[str, Any]:
    """Connect, start the stream, receive ``n`` tokens; check the text.

    ``mode`` is ``ours`` (frames are JSON arrays of events; start with a
    ``user_input`` op after the ``state`` snapshot; stop at ``done``) or ``baseline``
    (one JSON event per message; start with any message; stop after ``n`` tokens).
    """
    from websockets.asyncio.client import connect

    parts: list[str] = []
    latencies: list[float] = []
    frames = 0
    async with connect(url, max_size=None, compression=None) as ws:
        if mode == "ours":
            first = orjson.loads(await ws.recv())
            assert first[0]["type"] == "state", first
            t0 = time.perf_counter()
            await ws.send('{"op": "user_input", "text": "go"}')
            done = False
            while not done:
                data = await ws.recv()
                now = time.time()
                frames += 1
                for e in orjson.loads(data):
                    kind = e["type"]
                    if kind == "token_stream":
                        parts.append(e["text"])
                        latencies.append((now - e["ts"]) * 1000)
                    elif kind == "done":
                        done = True
                    elif kind == "error":
                        raise RuntimeError(f"error event: {e}")
        else:
            t0 = time.perf_counter()
            await ws.send("start")
            for _ in range(n):
                data = await ws.recv()
                now = time.time()
                frames += 1
                e = orjson.loads(data)
                parts.append(e["text"])
                latencies.append((now - e["ts"]) * 1000)
        elapsed = time.perf_counter() - t0
    text = "".join(parts)
    expected = "".join(token(i) for i in range(n))
    return {
        "mode": mode,
        "tokens": n,
        "seconds": elapsed,
        "frames": frames,
        "text_ok": text == expected,
        "latencies_ms": latencies,
    }


def _client_command(url: str, mode: str, n: int) -> list[str]:
    return child_command("ws", "client", url, mode, str(n))


def _result(stdout: bytes, what: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout)
    if not result["text_ok"]:
        raise RuntimeError(f"{what}: the client received text that differs from what was sent")
    return result


# ---- ours: trio-agent's server ----------------------------------------------------------


def run_ours(n: int, delay: float) -> dict[str, Any]:
    """One run: a fresh runtime and server; the client in a child process."""
    from trio_agent import open_runtime
    from trio_agent.testing import ScriptBuilder, ScriptedModel
    from trio_agent.transports import serve_websocket

    script = ScriptBuilder().turn(tokens=[token(i) for i in range(n)], delay=delay)

    async def main() -> dict[str, Any]:
        model = ScriptedModel(script.build())
        async with open_runtime(model=model) as runtime, trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_websocket, runtime, port=0))
            url = f"ws://127.0.0.1:{port}/sessions/bench"
            with trio.fail_after(TIMEOUT):
                proc = await trio.run_process(
                    _client_command(url, "ours", n), capture_stdout=True, cwd=CHILD_CWD
                )
            nursery.cancel_scope.cancel()
        return _result(proc.stdout, "ours")

    return trio.run(main)


# ---- the baseline: asyncio websockets, one message per token -------------------------------


def run_baseline(n: int, delay: float) -> dict[str, Any]:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            event = {
                "type": "token_stream",
                "session": "bench",
                "run": 1,
                "step": 1,
                "seq": i + 4,
                "ts": time.time(),
                "text": token(i),
            }
            await ws.send(orjson.dumps(event).decode())

    async def main() -> dict[str, Any]:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            url = f"ws://127.0.0.1:{port}/"
            proc = await asyncio.create_subprocess_exec(
                *_client_command(url, "baseline", n),
                stdout=subprocess.PIPE,
                cwd=CHILD_CWD,
            )
            stdout, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
            if proc.returncode != 0:
                raise RuntimeError(f"baseline client failed with exit status {proc.returncode}")
        return _result(stdout, "baseline")

    return asyncio.run(main())


# ---- the figures ------------------------------------------------------------------------


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    say = progress or (lambda _: None)
    runs = runs_for(quick)
    n = QUICK_TOKENS if quick else TOKENS
    m = QUICK_LATENCY_TOKENS if quick else LATENCY_TOKENS

    say("warm-up")
    run_ours(min(n, 5_000), 0.0)
    run_baseline(min(n, 5_000), 0.0)
    ours_tput: list[float] = []
    base_tput: list[float] = []
    frames: list[int] = []
    for r in range(runs):
        say(f"throughput, ours — run {r + 1}/{runs}, {n:,} tokens")
        result = run_ours(n, 0.0)
        ours_tput.append(n / result["seconds"])
        frames.append(result["frames"])
        say(f"throughput, {BASELINE} — run {r + 1}/{runs}")
        base_tput.append(n / run_baseline(n, 0.0)["seconds"])

    ours_p99: list[float] = []
    base_p99: list[float] = []
    pooled: list[float] = []
    for r in range(runs):
        say(f"latency at {RATE:g} tokens/s, ours — run {r + 1}/{runs}, {m} tokens")
        lat = run_ours(m, 1 / RATE)["latencies_ms"]
        pooled += lat
        ours_p99.append(percentile(lat, 99))
        say(f"latency at {RATE:g} tokens/s, {BASELINE} — run {r + 1}/{runs}")
        base_p99.append(percentile(run_baseline(m, 1 / RATE)["latencies_ms"], 99))

    frames.sort()
    throughput = Figure(
        benchmark=NAME,
        name="tokens_per_s",
        title="Tokens/s to a WebSocket client in another process (text checked exact)",
        unit="tokens/s",
        kind="throughput",
        ours=Stat(tuple(ours_tput)),
        baselines={BASELINE: Stat(tuple(base_tput))},
        targets=(Target("≥ 3× one message per token", baseline=BASELINE, at_least=3.0),),
        notes=(
            f"{n:,} tokens from a scripted model with no delay; ours sent them in a median "
            f"of {frames[len(frames) // 2]:,} frames (consecutive tokens merged, lossless)"
        ),
    )
    latency = Figure(
        benchmark=NAME,
        name="added_latency_p99",
        title=f"Added latency per token at {RATE:g} tokens/s (publish → client), p99",
        unit="ms",
        kind="latency",
        ours=Stat(tuple(ours_p99)),
        baselines={BASELINE: Stat(tuple(base_p99))},
        higher_is_better=False,
        targets=(Target("p99 ≤ 2 ms", at_most=2.0),),
        percentiles=latency_percentiles(pooled),
        notes=(
            f"{m} tokens per run; the event's ts (bus clock, time.time) to its arrival in "
            "the client process; pooled percentiles over all runs"
        ),
    )
    return [throughput, latency]


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "client":
        _, url, mode, n = argv
        result = asyncio.run(_client(url, mode, int(n)))
        sys.stdout.write(json.dumps(result))
        return 0
    if argv in ([], ["--quick"]):
        for figure in run(quick=bool(argv), progress=lambda what: print(what, file=sys.stderr)):
            print(
                json.dumps({k: v for k, v in figure.to_dict().items() if k != "series"}, indent=1)
            )
        return 0
    print("usage: python -m trio_agent.bench.ws [--quick] | client URL MODE N", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
