"""``GET /metrics`` on a real server on 127.0.0.1 (port 0), scraped over HTTP and read
with prometheus-client's own parser: behind the token, and every figure the server and
the runtime counted — sessions, clients by transport, events, refusals by code, the
publish-to-send latency and the tool durations, model errors and retries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

import trio_agent
from trio_agent.errors import ModelError
from trio_agent.models import Chunk, Message, Retrying, TextDelta, ToolSpec
from trio_agent.testing import ScriptBuilder
from trio_agent.transports import AgentServer

pytestmark = pytest.mark.timeout(30)

TOKEN = "s3cret"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of the exposition, keyed by name and sorted labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@asynccontextmanager
async def serving(model: Any) -> AsyncIterator[tuple[AgentServer, httpx.AsyncClient, int]]:
    async with (
        trio_agent.open_runtime(model=model, tools=[trio_agent.sleep]) as runtime,
        trio.open_nursery() as nursery,
        httpx.AsyncClient() as http,
    ):
        server = AgentServer(runtime, token=TOKEN)
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield server, http, port
        nursery.cancel_scope.cancel()


async def run_once(runtime: trio_agent.Runtime) -> trio_agent.Session:
    """Session ``s1`` after one run (``go``) to its ``done``."""
    session = await runtime.open_session("s1")
    async with session.subscribe(after=0) as events:
        await session.send("go")
        async for event in events:
            if event.type == "done":
                break
    return session


async def scrape(http: httpx.AsyncClient, port: int) -> Samples:
    response = await http.get(
        f"http://127.0.0.1:{port}/metrics", headers={"authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


async def test_metrics_are_behind_the_token_and_count_what_happened() -> None:
    script = (
        ScriptBuilder()
        .turn(
            ["Let me", " wait."],
            tool_calls=[{"id": "c1", "name": "sleep", "arguments": {"seconds": 0.01}}],
        )
        .turn(["Done."])
    )
    with trio.fail_after(20):
        async with serving(script.model()) as (server, http, port):
            url = f"http://127.0.0.1:{port}/metrics"
            assert (await http.get(url)).status_code == 401
            assert (
                await http.get(url, headers={"authorization": "Bearer wrong"})
            ).status_code == 401
            assert (await http.get(url + "?nope=1")).status_code == 400
            assert (await http.get(f"{url}?token={TOKEN}")).status_code == 200
            before = await scrape(http, port)
            assert before[("trio_agent_sessions_open", ())] == 0
            async with open_websocket_url(f"ws://127.0.0.1:{port}/sessions/s1?token={TOKEN}") as ws:
                await ws.send_message(orjson.dumps({"op": "resume"}).decode())  # refused
                await ws.send_message(orjson.dumps({"op": "fly"}).decode())  # refused
                await ws.send_message(orjson.dumps({"op": "user_input", "text": "go"}).decode())
                seen: list[dict[str, Any]] = []
                while not any(e["type"] == "done" for e in seen):
                    seen.extend(orjson.loads(await ws.get_message()))
                during = await scrape(http, port)
                session = server.runtime.get_session("s1")
                assert session is not None
                published = session.log.last_seq
    assert during[("trio_agent_sessions_open", ())] == 1
    assert during[("trio_agent_sessions_running", ())] == 0
    assert during[("trio_agent_clients", (("transport", "websocket"),))] == 1
    assert during[("trio_agent_events_published_total", ())] == published
    sent = during[("trio_agent_events_sent_total", ())]
    assert (
        sent
        == sum(1 for e in seen if e["seq"] > 0 and e["type"] != "state")
        + during[("trio_agent_events_merged_total", ())]
    )
    assert during[("trio_agent_commands_refused_total", (("code", "bad_state"),))] == 1
    assert during[("trio_agent_commands_refused_total", (("code", "unknown_op"),))] == 1
    ok = (("status", "ok"), ("tool", "sleep"))
    assert during[("trio_agent_tool_duration_seconds_count", ok)] == 1
    assert during[("trio_agent_tool_duration_seconds_sum", ok)] >= 0.01  # (it slept that long)
    inf = tuple(sorted((*ok, ("le", "+Inf"))))
    assert during[("trio_agent_tool_duration_seconds_bucket", inf)] == 1
    frames = during[("trio_agent_publish_to_send_seconds_count", ())]
    assert 1 <= frames <= during[("trio_agent_frames_sent_total", ())]
    assert during[("trio_agent_events_dropped_total", ())] == 0
    assert during[("trio_agent_subscribers_evicted_total", ())] == 0


async def test_model_errors_and_retries_are_counted_by_code() -> None:
    class Flaky:
        """Retries once (as a provider reports it), then fails."""

        async def stream(
            self, messages: Sequence[Message], tools: Sequence[ToolSpec]
        ) -> AsyncIterator[Chunk]:
            yield Retrying("rate_limited", "429: try again in 1s", attempt=1, delay=0.0)
            yield TextDelta("Hm")
            raise ModelError("server_error", "the provider answered 500")

        async def aclose(self) -> None:
            pass

    with trio.fail_after(20):
        async with serving(Flaky()) as (server, http, port):
            session = await run_once(server.runtime)
            samples = await scrape(http, port)
            await session.aclose()
            closed = await scrape(http, port)
    assert samples[("trio_agent_model_retries_total", (("code", "rate_limited"),))] == 1
    assert samples[("trio_agent_model_errors_total", (("code", "server_error"),))] == 1
    # A closed session's events stay counted: a counter never goes down.
    assert closed[("trio_agent_sessions_open", ())] == 0
    assert (
        closed[("trio_agent_events_published_total", ())]
        == samples[("trio_agent_events_published_total", ())]
        > 0
    )


async def test_a_tool_the_runtime_has_not_is_counted_under_one_label() -> None:
    """Names a model makes up are not labels: 20 invented tools are one series."""
    script = ScriptBuilder()
    for i in range(20):
        script = script.turn(tool_calls=[{"id": f"c{i}", "name": f"made_up_{i}", "arguments": {}}])
    script = script.turn(["Done."])
    with trio.fail_after(20):
        async with serving(script.model()) as (server, http, port):
            await run_once(server.runtime)
            samples = await scrape(http, port)
    labels = {dict(k[1]).get("tool") for k in samples if k[0].startswith("trio_agent_tool_")}
    assert labels == {"<unknown>"}
    unknown = (("status", "error"), ("tool", "<unknown>"))
    assert samples[("trio_agent_tool_duration_seconds_count", unknown)] == 20
    assert set(server.runtime.statistics().tool_calls) == {("<unknown>", "error")}
