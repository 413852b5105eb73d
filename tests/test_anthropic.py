"""AnthropicModel against a real HTTP server replaying recorded Messages streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provider_server import (
    Reply,
    assembled_calls,
    byte_cuts,
    collect,
    counting_client,
    open_responses,
    recording,
    recording_names,
    start_provider_server,
)

import trio_agent
from trio_agent import events as ev
from trio_agent.models import (
    AnthropicModel,
    Finish,
    Message,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolCallChunk,
    ToolCallEnd,
    ToolCallRecord,
    ToolSpec,
    Usage,
    from_spec,
    make_client,
)
from trio_agent.models.anthropic import DEFAULT_MAX_TOKENS
from trio_agent.testing import check_invariants

#: Every recording that ends normally, and what a user sees of it.
EXPECTED: dict[str, dict[str, Any]] = {
    "text": {
        "text": "Hello, wörld — 東京 👋!",
        "reasoning": "",
        "calls": {},
        "ended": [],
        # input_tokens 25 plus 10 read from the prompt cache
        "finish": Finish("end_turn", Usage(35, 15)),
    },
    "tool_use": {
        "text": "I'll check the weather.",
        "reasoning": "",
        "calls": {
            "1": ("toolu_01A", "get_weather", {"city": "Zürich", "unit": "celsius", "alt": "東京"})
        },
        "ended": [1],
        "finish": Finish("tool_use", Usage(400, 89)),
    },
    "tool_use_empty_input": {
        "text": "",
        "reasoning": "",
        "calls": {"0": ("toolu_01E", "get_time", {})},
        "ended": [0],
        "finish": Finish("tool_use", Usage(300, 30)),
    },
    "parallel_tool_use": {
        "text": "",
        "reasoning": "",
        "calls": {
            "0": ("toolu_01P", "get_weather", {"city": "Paris"}),
            "1": ("toolu_01Q", "calculator", {"expression": "6*7"}),
        },
        "ended": [0, 1],
        "finish": Finish("tool_use", Usage(500, 70)),
    },
    "thinking": {
        "text": "27 \N{MULTIPLICATION SIGN} 453 = 12,231.",
        "reasoning": "Let me work out 27 \N{MULTIPLICATION SIGN} 453 = 12 231."
        "⟨signed:EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds⟩",
        "calls": {},
        "ended": [],
        "finish": Finish("end_turn", Usage(50, 120)),
    },
    "thinking_tool_use": {
        "text": "",
        "reasoning": "The user wants 27 \N{MULTIPLICATION SIGN} 453; the calculator is exact."
        "⟨signed:ErUBCkYIBxgCIkDsig1⟩⟨redacted:EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlx⟩",
        "calls": {"2": ("toolu_01T", "calculator", {"expression": "27*453"})},
        "ended": [2],
        "finish": Finish("tool_use", Usage(420, 95)),
    },
    "max_tokens_cut": {
        "text": "",
        "reasoning": "",
        "calls": {"0": ("toolu_01C", "write_file", "<invalid>")},
        "ended": [0],
        "finish": Finish("max_tokens", Usage(200, 16)),
    },
    "no_trailing_newline": {
        "text": "Bye.",
        "reasoning": "",
        "calls": {},
        "ended": [],
        "finish": Finish("end_turn", Usage(8, 3)),
    },
}
#: Recordings of failures, exercised in test_provider_failures.py.
FAILING = {"error_event", "malformed"}

WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", "The current time", {"type": "object", "properties": {}})


def make_model(server_url: str, client: httpx.AsyncClient, **kwargs: Any) -> AnthropicModel:
    return AnthropicModel(
        "claude-sonnet-4-5", base_url=server_url, api_key="sk-ant-test", client=client, **kwargs
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with counting_client() as client:
        yield client


def test_every_recording_has_an_expectation() -> None:
    assert set(recording_names("anthropic")) == set(EXPECTED) | FAILING


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recording(name: str, nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    server = await start_provider_server(nursery, Reply.sse(recording("anthropic", name)))
    with trio.fail_after(5):
        collected = await collect(
            make_model(server.url, client).stream([Message("user", "hi")], [WEATHER])
        )
    assert collected.summary() == EXPECTED[name]
    assert isinstance(collected.chunks[-1], Finish)
    calls = assembled_calls(collected.chunks)
    if calls is not None:  # the sans-I/O assembler agrees with the plain fold
        expected = [
            (call_id, name, None if args == "<invalid>" else args, args == "<invalid>")
            for call_id, name, args in EXPECTED[name]["calls"].values()
        ]
        assert [(c[0], c[1], c[2], c[3] is not None) for c in calls] == expected
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["accept"] == "text/event-stream"
    assert "authorization" not in request.headers
    body = request.json()
    assert body["stream"] is True
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS


async def test_event_mapping(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    server = await start_provider_server(
        nursery,
        Reply.sse(recording("anthropic", "tool_use")),
        Reply.sse(recording("anthropic", "thinking")),
    )
    model = make_model(server.url, client)
    with trio.fail_after(5):
        tool_use = await collect(model.stream([], []))
        thinking = await collect(model.stream([], []))
    # The empty "" delta is dropped; the call starts with its id and name, ends at stop.
    assert tool_use.chunks == [
        TextDelta("I'll check the weather."),
        ToolCallChunk(1, "toolu_01A", "get_weather", ""),
        ToolCallChunk(1, None, None, '{"ci'),
        ToolCallChunk(1, None, None, 'ty": "Zü'),
        ToolCallChunk(1, None, None, 'rich", "'),
        ToolCallChunk(1, None, None, 'unit": "celsius", "alt'),
        ToolCallChunk(1, None, None, '": "東'),
        ToolCallChunk(1, None, None, '京"}'),
        ToolCallEnd(1),
        Finish("tool_use", Usage(400, 89)),
    ]
    assert thinking.chunks == [
        ReasoningDelta("Let me work out"),
        ReasoningDelta(" 27 \N{MULTIPLICATION SIGN} 453 = 12 231."),
        ReasoningEnd(signature="EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"),
        TextDelta("27 \N{MULTIPLICATION SIGN} 453 = 12,231."),
        Finish("end_turn", Usage(50, 120)),
    ]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(name=st.sampled_from(sorted(EXPECTED)), data=st.data())
async def test_any_byte_split_gives_the_same_answer(name: str, data: st.DataObject) -> None:
    body = recording("anthropic", name)
    cuts = data.draw(byte_cuts(body), label="cuts")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, make_client(trust_env=False) as client:
            server = await start_provider_server(nursery, Reply.sse(body, cuts=cuts))
            collected = await collect(make_model(server.url, client).stream([], []))
            nursery.cancel_scope.cancel()
    assert collected.summary() == EXPECTED[name]


async def test_multi_step_conversation_request_format(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery,
        Reply.sse(recording("anthropic", "parallel_tool_use")),
        Reply.sse(recording("anthropic", "text")),
    )
    model = make_model(server.url, client, max_tokens=1024, system="Be brief.")
    question = Message("user", "Weather in Paris, and 6*7?")
    with trio.fail_after(5):
        first = await collect(model.stream([question], [WEATHER, TIME]))
    calls = tuple(
        ToolCallRecord(call_id, name, args, raw)
        for (call_id, name, raw), args in zip(
            first.calls.values(), first.arguments().values(), strict=True
        )
    )
    conversation = [
        question,
        Message("assistant", first.text, tool_calls=calls),
        Message("tool", '{"temp_c": 21}', call_id="toolu_01P", name="get_weather", status="ok"),
        Message("tool", "error: bad input", call_id="toolu_01Q", name="calculator", status="error"),
        Message("user", "Also Zürich?"),  # steering, sent while the tools ran
    ]
    with trio.fail_after(5):
        second = await collect(model.stream(conversation, [WEATHER, TIME]))
    assert second.text == "Hello, wörld — 東京 👋!"
    assert len(server.requests) == 2
    assert server.requests[1].json() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": True,
        "system": "Be brief.",
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
            {
                "name": "get_time",
                "description": "The current time",
                "input_schema": {"type": "object", "properties": {}},
            },
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris, and 6*7?"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_01P",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_01Q",
                        "name": "calculator",
                        "input": {"expression": "6*7"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01P",
                        "content": '{"temp_c": 21}',
                        "is_error": False,
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01Q",
                        "content": "error: bad input",
                        "is_error": True,
                    },
                    {"type": "text", "text": "Also Zürich?"},
                ],
            },
        ],
    }


async def test_thinking_blocks_go_back_with_their_signatures_in_a_tool_use_loop(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    # With extended thinking on, the API refuses the second request of a tool-use
    # loop unless the assistant turn starts with its thinking blocks, unchanged.
    server = await start_provider_server(
        nursery,
        Reply.sse(recording("anthropic", "thinking_tool_use")),
        Reply.sse(recording("anthropic", "text")),
    )
    model = make_model(server.url, client, extra_body={"thinking": {"type": "enabled"}})
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=model, tools=[trio_agent.calculator]) as rt:
            session = await rt.open_session("think")
            async with session.subscribe(after=0) as events:
                await session.send("27 × 453?")
                async for e in events:
                    if e.type == "done":
                        break
    log = list(session.log)
    check_invariants(log, session.state)
    seals = [(e.text, e.signature, e.redacted) for e in log if isinstance(e, ev.Reasoning)]
    assert seals[-2:] == [
        ("", "ErUBCkYIBxgCIkDsig1", None),
        ("", None, "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlx"),
    ]
    assert len(server.requests) == 2
    assistant = server.requests[1].json()["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": [
            {
                "type": "thinking",
                "thinking": "The user wants 27 × 453; the calculator is exact.",
                "signature": "ErUBCkYIBxgCIkDsig1",
            },
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlx"},
            {
                "type": "tool_use",
                "id": "toolu_01T",
                "name": "calculator",
                "input": {"expression": "27*453"},
            },
        ],
    }
    # The blocks are facts of the log: a state rebuilt from it (a reconnect, another
    # process's recovery) sends the same request.
    rebuilt = trio_agent.initial_state("think")
    for e in log:
        rebuilt = trio_agent.reduce(rebuilt, e)
    assert rebuilt.messages == session.state.messages
    assert model.request_body(rebuilt.messages, [])["messages"][1] == assistant


def test_message_conversion_edge_cases() -> None:
    model = AnthropicModel("m", base_url="http://127.0.0.1:9", api_key="k")
    body = model.request_body(
        [
            Message("user", "write the notes"),
            Message(
                "assistant",
                "Writing.",
                tool_calls=(ToolCallRecord("t1", "write_file", None, '{"path": "/tm'),),
            ),
            # A steering message that arrived before the tool result: results go first.
            Message("user", "use /var instead"),
            Message("tool", "", call_id="t1", name="write_file", status="cancelled"),
            Message("assistant", "", cut=True),  # cut before its first token: left out
            Message("user", "go on"),
        ],
        [],
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "write the notes"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Writing."},
                {"type": "tool_use", "id": "t1", "name": "write_file", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": True},
                {"type": "text", "text": "use /var instead"},
                {"type": "text", "text": "go on"},
            ],
        },
    ]
    assert "tools" not in body
    assert "system" not in body


async def test_base_url_and_key_from_environment(
    nursery: trio.Nursery, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_provider_server(nursery, Reply.sse(recording("anthropic", "text")))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url + "/")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    model = from_spec("anthropic:claude-haiku-4-5", client=client)
    assert isinstance(model, AnthropicModel)
    with trio.fail_after(5):
        collected = await collect(model.stream([Message("user", "hi")], []))
    assert collected.text == "Hello, wörld — 東京 👋!"
    [request] = server.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-from-env"
    assert request.json()["model"] == "claude-haiku-4-5"


def test_base_url_default_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    assert AnthropicModel("m").url == "https://api.anthropic.com/v1/messages"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://env.invalid")
    assert AnthropicModel("m").url == "http://env.invalid/v1/messages"
    assert AnthropicModel("m", base_url="http://arg.invalid").url == (
        "http://arg.invalid/v1/messages"
    )


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match=r"^max_tokens must be at least 1, not 0$"):
        AnthropicModel("m", max_tokens=0)
    with pytest.raises(ValueError, match=r"^AnthropicModel needs a model name"):
        AnthropicModel("")


async def test_connection_is_reused_between_steps(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery,
        Reply.sse(recording("anthropic", "text")),
        Reply.sse(recording("anthropic", "tool_use")),
    )
    model = make_model(server.url, client)
    with trio.fail_after(5):
        await collect(model.stream([Message("user", "hi")], []))
        assert open_responses(client) == 0  # read to its end and released (reused below)
        await collect(model.stream([Message("user", "hi")], []))
    first, second = server.requests
    assert first.client_port == second.client_port
