"""End to end against a real inference engine: llama.cpp's own server with SmolLM2-135M
(``llama_server`` in conftest.py, one for the session), through ``openai:``.

What is asserted is protocol and behaviour — events, usage, finish reasons, what the
server says about its own slots and counters — never the model's wording.  Generation
is kept short (``max_tokens``); where a test needs a generation that would outlast it,
``ignore_eos`` (a llama.cpp option) keeps the model from ending early, so that only our
interrupt can stop it.  Time is real here (the server is another process), so every
wait is bounded by ``fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

import httpx
import pytest
import trio
from provider_server import counting_client, open_responses

import trio_agent
from trio_agent import events as ev
from trio_agent.bench._llama_server import LlamaServer
from trio_agent.models import OpenAIChatModel, RetryPolicy, from_spec
from trio_agent.testing import RecordingModel, check_invariants

pytestmark = pytest.mark.timeout(90)

RUNAWAY = 1024
"""``max_tokens`` of a generation only an interrupt ends: about 15 s of SmolLM2 on one
thread, far longer than the test waits for it."""

WAIT = 30.0
"""Seconds any one wait of a test may take (a loaded CI machine is slow, not stuck)."""

UNTIL_EOS: Mapping[str, Any] = {"ignore_eos": True}
"""llama.cpp's request option that generates until ``max_tokens``: the length of the
answer is ours, not the model's."""


def smollm2(
    server: LlamaServer,
    client: httpx.AsyncClient,
    max_tokens: int,
    extra_body: Mapping[str, Any] = UNTIL_EOS,
    **options: Any,
) -> OpenAIChatModel:
    return OpenAIChatModel(
        "smollm2",
        base_url=server.base_url,
        client=client,
        max_tokens=max_tokens,
        extra_body=extra_body,
        **options,
    )


@pytest.fixture
async def client(llama_server: LlamaServer) -> AsyncIterator[httpx.AsyncClient]:
    """A pool whose open responses the tests count; each test starts with the server
    idle (a previous test's request fully released)."""
    async with counting_client() as pool:
        with trio.fail_after(WAIT):
            await llama_server.wait_idle(pool)
        yield pool


async def until(events: Any, predicate: Callable[[ev.Event], bool]) -> ev.Event:
    async for e in events:
        if predicate(e):
            return e
    raise AssertionError("the subscription ended before the awaited event")


def of_type(log: Any, cls: type[ev.Event]) -> list[Any]:
    return [e for e in log if isinstance(e, cls)]


async def test_text_streams_token_by_token_and_done_carries_the_servers_usage(
    llama_server: LlamaServer, client: httpx.AsyncClient
) -> None:
    model = from_spec("openai:smollm2", base_url=llama_server.base_url, client=client)
    assert isinstance(model, OpenAIChatModel)
    model.max_tokens = 48
    model.extra_body.update(UNTIL_EOS)
    before = await llama_server.tokens_predicted(client)
    with trio.fail_after(WAIT):
        async with trio_agent.open_runtime(model=model) as runtime:
            session = await runtime.open_session("s")
            async with session.subscribe(after=0) as events:
                await session.send("Count from one to twenty.")
                await until(events, lambda e: e.type == "token_stream")
                # The first token reached us while the server was still generating.
                assert await llama_server.busy(client)
                done = await until(events, lambda e: e.type == "done")
    generated = await llama_server.tokens_predicted(client) - before
    tokens = of_type(session.log, ev.TokenStream)
    assert isinstance(done, ev.Done)
    assert (done.status, done.finish_reason) == ("completed", "length")
    # The server's own count, as the stream's usage chunk reported it.
    assert done.usage["output_tokens"] == generated == 48
    assert done.usage["input_tokens"] > 0
    # One event per token as the server sends them (it holds back a token now and then:
    # a UTF-8 character cut between tokens, a possible stop word).
    assert 48 // 2 <= len(tokens) <= 48
    assert all(t.text for t in tokens)
    assert "".join(t.text for t in tokens) == done.text != ""
    assert open_responses(client) == 0
    check_invariants(list(session.log), session.state)


async def test_max_tokens_cut_ends_done_with_finish_reason_length(
    llama_server: LlamaServer, client: httpx.AsyncClient
) -> None:
    # ``max_tokens`` is sent as the body's own field; no ignore_eos: a real cut.
    model = smollm2(llama_server, client, max_tokens=3, extra_body={})
    assert model.request_body([], [])["max_tokens"] == 3
    with trio.fail_after(WAIT):
        async with trio_agent.open_runtime(model=model) as runtime:
            session = await runtime.open_session("s")
            async with session.subscribe(after=0) as events:
                await session.send("Write a long story about a lighthouse keeper.")
                done = await until(events, lambda e: e.type == "done")
    assert isinstance(done, ev.Done)
    assert (done.status, done.finish_reason, done.usage["output_tokens"]) == (
        "completed",
        "length",
        3,
    )
    assert session.state.status == "done" and session.state.done_text == done.text
    check_invariants(list(session.log), session.state)


async def test_hard_interrupt_closes_the_stream_and_the_server_stops_generating(
    llama_server: LlamaServer, client: httpx.AsyncClient
) -> None:
    before = await llama_server.tokens_predicted(client)
    with trio.fail_after(WAIT):
        async with trio_agent.open_runtime(model=smollm2(llama_server, client, RUNAWAY)) as rt:
            session = await rt.open_session("s")
            async with session.subscribe(after=0) as events:
                await session.send("Tell me everything about the sea.")
                for _ in range(3):
                    await until(events, lambda e: e.type == "token_stream")
                assert await llama_server.busy(client)
                await session.interrupt("hard", reason="enough")
                interrupted = await until(events, lambda e: e.type == "interrupted")
                # Our side: the response is closed by the time the run is paused.
                assert open_responses(client) == 0
                # The server's side: its slot goes idle, long before max_tokens.
                await llama_server.wait_idle(client)
                generated = await llama_server.tokens_predicted(client) - before
                assert 3 <= generated < RUNAWAY // 4
                assert isinstance(interrupted, ev.Interrupted) and interrupted.mode == "hard"
                assistant = session.state.messages[-1]
                assert assistant.role == "assistant" and assistant.cut
                await session.cancel()
    done = of_type(session.log, ev.Done)[-1]
    assert (done.status, done.finish_reason) == ("cancelled", None)
    check_invariants(list(session.log), session.state)


async def test_soft_interrupt_lets_the_step_finish(
    llama_server: LlamaServer, client: httpx.AsyncClient
) -> None:
    before = await llama_server.tokens_predicted(client)
    with trio.fail_after(WAIT):
        async with trio_agent.open_runtime(model=smollm2(llama_server, client, 40)) as runtime:
            session = await runtime.open_session("s")
            async with session.subscribe(after=0) as events:
                await session.send("Describe a forest.")
                await until(events, lambda e: e.type == "token_stream")
                await session.interrupt("soft", reason="after this step")
                done = await until(events, lambda e: e.type == "done")
    generated = await llama_server.tokens_predicted(client) - before
    assert isinstance(done, ev.Done)
    # The step ran to its end (the whole answer, as the server generated it); it was the
    # last step, so nothing was left to pause and the run is done.
    assert (done.status, done.finish_reason) == ("completed", "length")
    assert done.usage["output_tokens"] == generated == 40
    assert not session.state.messages[-1].cut
    types = [e.type for e in session.log]
    assert types.index("interrupt") < types.index("done")
    assert "interrupted" not in types
    check_invariants(list(session.log), session.state)


async def test_a_steering_message_sent_mid_generation_is_in_the_next_request(
    llama_server: LlamaServer, client: httpx.AsyncClient
) -> None:
    model = RecordingModel(smollm2(llama_server, client, 24))
    with trio.fail_after(WAIT):
        async with trio_agent.open_runtime(model=model) as runtime:
            session = await runtime.open_session("s")
            async with session.subscribe(after=0) as events:
                await session.send("Name some colours.")
                await until(events, lambda e: e.type == "token_stream")
                await session.send("Now name some animals.")
                done = await until(events, lambda e: e.type == "done")
    assert len(model.calls) == 2
    first, second = model.calls
    assert [(m.role, m.content) for m in first] == [("user", "Name some colours.")]
    assert [m.role for m in second] == ["user", "assistant", "user"]
    assert second[2].content == "Now name some animals."
    assert second[1].content and not second[1].cut  # step 1's whole answer went back
    assert isinstance(done, ev.Done) and (done.status, done.step) == ("completed", 2)
    check_invariants(list(session.log), session.state)


async def test_the_server_dying_mid_stream_ends_the_run_with_a_clear_error() -> None:
    server = LlamaServer()  # its own: this one is killed
    with server:
        async with counting_client() as pool:
            model = smollm2(server, pool, RUNAWAY, retry=RetryPolicy(max_attempts=1))
            with trio.fail_after(WAIT):
                async with trio_agent.open_runtime(model=model) as runtime:
                    session = await runtime.open_session("s")
                    async with session.subscribe(after=0) as events:
                        await session.send("Tell me a very long story.")
                        await until(events, lambda e: e.type == "token_stream")
                        server.kill()
                        done = await until(events, lambda e: e.type == "done")
                        error = of_type(session.log, ev.Error)[-1]
                        assert open_responses(pool) == 0
                        # The session carries on: the next run is told the server is gone.
                        await session.send("Are you there?")
                        again = await until(events, lambda e: e.type == "done")
    assert isinstance(done, ev.Done) and (done.status, done.finish_reason) == ("failed", None)
    assert error.code == "connection" and not error.retryable
    assert error.message.startswith(
        f"the connection to OpenAI-compatible server at {server.base_url}/chat/completions "
        "dropped mid-stream: "
    )
    assert session.state.messages[1].cut  # what had streamed stays, marked as cut
    assert isinstance(again, ev.Done) and again.status == "failed"
    refused = of_type(session.log, ev.Error)[-1]
    assert refused.code == "connection"
    assert refused.message.startswith(
        f"could not connect to OpenAI-compatible server at {server.base_url}/chat/completions"
    )
    check_invariants(list(session.log), session.state)


@trio_agent.tool
async def weather(city: Literal["Paris", "Rome"]) -> dict[str, str]:
    """The weather in a city."""
    await trio.lowlevel.checkpoint()
    return {"city": city, "sky": "clear"}


async def test_tool_choice_required_makes_smollm2_call_a_tool_that_runs(
    llama_tools_server: LlamaServer,
) -> None:
    # The engine forces the call (see smollm2-tools.jinja); the tool's enum leaves the
    # model nothing to ramble in.  Every step is forced to call, so the run ends at
    # max_steps: that its second request carried the first call and its result, and
    # that the server took them and answered with another call, is what this shows.
    async with counting_client() as pool:
        with trio.fail_after(WAIT):
            await llama_tools_server.wait_idle(pool)
        forced = {"tool_choice": "required", "parallel_tool_calls": False, "temperature": 0}
        model = RecordingModel(smollm2(llama_tools_server, pool, 96, extra_body=forced))
        with trio.fail_after(WAIT):
            async with trio_agent.open_runtime(
                model=model, tools=[weather], max_steps=2
            ) as runtime:
                session = await runtime.open_session("s")
                async with session.subscribe(after=0) as events:
                    await session.send("What is the weather in Paris?")
                    done = await until(events, lambda e: e.type == "done")
        assert open_responses(pool) == 0
    log = list(session.log)
    check_invariants(log, session.state)
    calls, results = of_type(log, ev.ToolCall), of_type(log, ev.ToolResult)
    assert [(c.step, c.name) for c in calls] == [(1, "weather"), (2, "weather")]
    assert all(dict(c.arguments).keys() == {"city"} for c in calls)
    assert {c.arguments["city"] for c in calls} <= {"Paris", "Rome"}  # the enum held
    assert [(r.call_id, r.status) for r in results] == [(c.call_id, "ok") for c in calls]
    first = calls[0]
    deltas = [d for d in of_type(log, ev.ToolCallDelta) if d.call_id == first.call_id]
    assert len(deltas) > 1  # the arguments streamed in fragments
    assert trio_agent.events.loads("".join(d.delta for d in deltas)) == dict(first.arguments)
    second = model.calls[1]
    assert [m.role for m in second] == ["user", "assistant", "tool"]
    assert second[1].tool_calls[0].call_id == first.call_id
    assert second[2].call_id == first.call_id
    # (a retryable error would be a stale keep-alive connection, tried again at once)
    errors = [e for e in of_type(log, ev.Error) if not e.retryable]
    assert [e.code for e in errors] == ["max_steps"]
    assert isinstance(done, ev.Done) and (done.status, done.finish_reason) == (
        "failed",
        "tool_calls",
    )
