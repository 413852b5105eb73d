"""``sse``: tokens delivered as Server-Sent Events to a client in another process,
against the WebSocket of the same server in the same run.

- **Throughput.**  A scripted model streams ``n`` tokens as fast as it can; our server
  (:class:`trio_agent.transports.AgentServer`, the one ``trio-agent serve`` runs) sends
  them on ``GET /sessions/{id}/events`` to an httpx + httpx-sse client in a separate
  process, which starts the run with ``POST /sessions/{id}/commands``, checks the text
  exactly and reports tokens per second from that POST to ``done``.  Baseline, measured
  round-robin in the same run: the same server's WebSocket to the ``ws`` benchmark's
  client (:func:`trio_agent.bench.ws.run_ours`).  Both framings share one pump (one
  subscription, batches, merging), so the ratio is what the framing and the client's
  parsing cost.
- **Added latency at a low rate.**  The model streams 100 tokens/s; the client measures,
  for each token, its arrival time minus the event's ``ts`` (both processes read the
  same system clock): the pump, the encoding, the socket, the client's parsing.  The
  WebSocket is measured the same way.

The client is this module run as ``python -m trio_agent.bench.sse client URL N``.
"""

from __future__ import annotations

import json
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

NAME: Final = "sse"
TITLE: Final = "Server-Sent Events: tokens/s and added latency, against the WebSocket"
REQUIRES: Final = {"websockets": "bench"}
"""The baseline's client (the ``ws`` benchmark's) needs websockets."""

TOKENS: Final = 100_000
QUICK_TOKENS: Final = 20_000
RATE: Final = 100.0
"""Tokens per second for the latency figure."""
LATENCY_TOKENS: Final = 1_000
QUICK_LATENCY_TOKENS: Final = 100
"""The smoke run's (--quick): a second a run at RATE, enough to check the path and the
percentiles, not to judge them."""
BASELINE: Final = "WebSocket (the same server)"
TIMEOUT: Final = 300.0
SESSION: Final = "bench"


def token(i: int) -> str:
    return f"t{i} "


# ---- the client (a separate process) --------------------------------------------------


def _client(base: str, n: int) -> dict[str, Any]:
    """Open the event stream, start the run with a POST, receive ``n`` tokens; check
    the text."""
    import httpx
    from httpx_sse import connect_sse

    parts: list[str] = []
    latencies: list[float] = []
    messages = 0
    with (
        httpx.Client(base_url=base, timeout=TIMEOUT) as stream_client,
        httpx.Client(base_url=base, timeout=TIMEOUT) as commands,
        connect_sse(stream_client, "GET", f"/sessions/{SESSION}/events") as source,
    ):
        received = source.iter_sse()
        first = next(received)
        assert first.event == "state", first
        t0 = time.perf_counter()
        reply = commands.post(
            f"/sessions/{SESSION}/commands", json={"op": "user_input", "text": "go"}
        )
        assert reply.status_code == 202, reply.text
        for message in received:
            now = time.time()
            messages += 1
            if message.event == "token_stream":
                e = orjson.loads(message.data)
                parts.append(e["text"])
                latencies.append((now - e["ts"]) * 1000)
            elif message.event == "done":
                break
            elif message.event == "error":
                raise RuntimeError(f"error event: {message.data}")
        elapsed = time.perf_counter() - t0
    return {
        "tokens": n,
        "seconds": elapsed,
        "frames": messages,
        "text_ok": "".join(parts) == "".join(token(i) for i in range(n)),
        "latencies_ms": latencies,
    }


# ---- ours: the same server, over SSE ------------------------------------------------------


def run_ours(n: int, delay: float) -> dict[str, Any]:
    """One run: a fresh runtime and server; the SSE client in a child process."""
    from trio_agent import open_runtime
    from trio_agent.testing import ScriptBuilder, ScriptedModel
    from trio_agent.transports import serve_websocket

    script = ScriptBuilder().turn(tokens=[token(i) for i in range(n)], delay=delay)

    async def main() -> dict[str, Any]:
        model = ScriptedModel(script.build())
        async with open_runtime(model=model) as runtime, trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_websocket, runtime, port=0))
            with trio.fail_after(TIMEOUT):
                proc = await trio.run_process(
                    child_command(NAME, "client", f"http://127.0.0.1:{port}", str(n)),
                    capture_stdout=True,
                    cwd=CHILD_CWD,
                )
            nursery.cancel_scope.cancel()
        result: dict[str, Any] = json.loads(proc.stdout)
        if not result["text_ok"]:
            raise RuntimeError("sse: the client received text that differs from what was sent")
        return result

    return trio.run(main)


# ---- the figures ------------------------------------------------------------------------


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    from . import ws

    say = progress or (lambda _: None)
    runs = runs_for(quick)
    n = QUICK_TOKENS if quick else TOKENS
    m = QUICK_LATENCY_TOKENS if quick else LATENCY_TOKENS

    say("warm-up")
    run_ours(min(n, 5_000), 0.0)
    ws.run_ours(min(n, 5_000), 0.0)
    sse_tput: list[float] = []
    ws_tput: list[float] = []
    frames: list[int] = []
    for r in range(runs):
        say(f"throughput, SSE — run {r + 1}/{runs}, {n:,} tokens")
        result = run_ours(n, 0.0)
        sse_tput.append(n / result["seconds"])
        frames.append(result["frames"])
        say(f"throughput, {BASELINE} — run {r + 1}/{runs}")
        ws_tput.append(n / ws.run_ours(n, 0.0)["seconds"])

    sse_p99: list[float] = []
    ws_p99: list[float] = []
    pooled: list[float] = []
    for r in range(runs):
        say(f"latency at {RATE:g} tokens/s, SSE — run {r + 1}/{runs}, {m} tokens")
        lat = run_ours(m, 1 / RATE)["latencies_ms"]
        pooled += lat
        sse_p99.append(percentile(lat, 99))
        say(f"latency at {RATE:g} tokens/s, {BASELINE} — run {r + 1}/{runs}")
        ws_p99.append(percentile(ws.run_ours(m, 1 / RATE)["latencies_ms"], 99))

    frames.sort()
    throughput = Figure(
        benchmark=NAME,
        name="tokens_per_s",
        title="Tokens/s to an SSE client in another process (httpx-sse, text checked exact)",
        unit="tokens/s",
        kind="throughput",
        ours=Stat(tuple(sse_tput)),
        baselines={BASELINE: Stat(tuple(ws_tput))},
        targets=(Target("≥ 0.5× the WebSocket", baseline=BASELINE, at_least=0.5),),
        notes=(
            f"{n:,} tokens from a scripted model with no delay; SSE sent them in a median "
            f"of {frames[len(frames) // 2]:,} messages (consecutive tokens merged, lossless)"
        ),
    )
    latency = Figure(
        benchmark=NAME,
        name="added_latency_p99",
        title=f"SSE added latency per token at {RATE:g} tokens/s (publish → client), p99",
        unit="ms",
        kind="latency",
        ours=Stat(tuple(sse_p99)),
        baselines={BASELINE: Stat(tuple(ws_p99))},
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
    if len(argv) == 3 and argv[0] == "client":
        _, base, n = argv
        sys.stdout.write(json.dumps(_client(base, int(n))))
        return 0
    if argv in ([], ["--quick"]):
        for figure in run(quick=bool(argv), progress=lambda what: print(what, file=sys.stderr)):
            print(
                json.dumps({k: v for k, v in figure.to_dict().items() if k != "series"}, indent=1)
            )
        return 0
    print("usage: python -m trio_agent.bench.sse [--quick] | client URL N", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
