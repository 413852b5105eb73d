"""OpenAIChatModel against a real HTTP server replaying recorded Chat Completions streams."""

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

from trio_agent.models import (
    Finish,
    Message,
    OpenAIChatModel,
    TextDelta,
    ToolCallChunk,
    ToolCallRecord,
    ToolSpec,
    Usage,
    from_spec,
    make_client,
)

#: Every recording that ends normally, and what a user sees of it.
EXPECTED: dict[str, dict[str, Any]] = {
    "text": {
        "text": "Hello, wörld — 東京 👋!",
        "reasoning": "",
        "calls": {},
        "ended": [],
        "finish": Finish("stop", Usage(12, 7)),
    },
    "tool_call_with_role": {
        "text": "",
        "reasoning": "",
        "calls": {
            "0": (
                "call_Wx1",
                "get_weather",
                {"city": "Zürich", "unit": "celsius", "note": "😀 ok"},
            )
        },
        "ended": [],
        "finish": Finish("tool_calls", Usage(80, 24)),
    },
    "parallel_sequential": {
        "text": "Checking both.",
        "reasoning": "",
        "calls": {
            "0": ("call_A", "get_weather", {"city": "Paris"}),
            "1": ("call_B", "get_time", {"tz": "Europe/Paris"}),
        },
        "ended": [],
        "finish": Finish("tool_calls", Usage(95, 40)),
    },
    "parallel_interleaved": {
        "text": "",
        "reasoning": "",
        "calls": {
            "0": ("call_X", "sleep", {"seconds": 0.5}),
            "1": ("call_Y", "calculator", {"expression": "6 \N{MULTIPLICATION SIGN} 7"}),
        },
        "ended": [],
        "finish": Finish("tool_calls", Usage(60, 30)),
    },
    "whole_call_no_index": {
        "text": "Let me compute.",
        "reasoning": "",
        "calls": {
            "('whole', 0)": ("call_1", "calculator", {"expression": "2+2"}),
            "('whole', 1)": ("call_2", "sleep", {"seconds": 1}),
        },
        "ended": [],
        "finish": Finish("tool_calls", Usage(40, 22)),
    },
    "reasoning_content": {
        "text": "4",
        "reasoning": "The user asks for 2+2 — that\N{RIGHT SINGLE QUOTATION MARK}s 4.",
        "calls": {},
        "ended": [],
        "finish": Finish("stop", Usage(10, 20)),
    },
    "reasoning_field": {
        "text": "Done.",
        "reasoning": "Thinking…",
        "calls": {},
        "ended": [],
        "finish": Finish("stop", Usage(5, 9)),
    },
    "no_trailing_newline": {
        "text": "Short answer.",
        "reasoning": "",
        "calls": {},
        "ended": [],
        "finish": Finish("stop", Usage(3, 2)),
    },
    # A server that sends no [DONE] and ends on the usage chunk, with no trailing newline.
    "usage_last_no_done": {
        "text": "No sentinel.",
        "reasoning": "",
        "calls": {},
        "ended": [],
        "finish": Finish("stop", Usage(4, 3)),
    },
}
#: Recordings of failures, exercised in test_provider_failures.py.
FAILING = {"malformed"}

WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", "The current time", {"type": "object", "properties": {}})


def make_model(server_url: str, client: httpx.AsyncClient, **kwargs: Any) -> OpenAIChatModel:
    return OpenAIChatModel(
        "gpt-4o-mini", base_url=f"{server_url}/v1", api_key="sk-test", client=client, **kwargs
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with counting_client() as client:
        yield client


def test_every_recording_has_an_expectation() -> None:
    assert set(recording_names("openai")) == set(EXPECTED) | FAILING


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recording(name: str, nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    server = await start_provider_server(nursery, Reply.sse(recording("openai", name)))
    model = make_model(server.url, client)
    with trio.fail_after(5):
        collected = await collect(model.stream([Message("user", "hi")], [WEATHER]))
    assert collected.summary() == EXPECTED[name]
    assert isinstance(collected.chunks[-1], Finish)
    calls = assembled_calls(collected.chunks)
    if calls is not None:  # the sans-I/O assembler agrees with the plain fold
        assert [(c[0], c[1], c[2]) for c in calls] == list(EXPECTED[name]["calls"].values())
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["accept"] == "text/event-stream"
    body = request.json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_first_chunk_with_role_and_tool_call_yields_the_call_start(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery, Reply.sse(recording("openai", "tool_call_with_role"))
    )
    with trio.fail_after(5):
        collected = await collect(make_model(server.url, client).stream([], []))
    assert collected.chunks[0] == ToolCallChunk(0, "call_Wx1", "get_weather", "")
    # Fragments carry no id or name, and nothing empty is sent on.
    assert all(
        chunk.call_id is None and chunk.name is None and chunk.arguments
        for chunk in collected.chunks[1:]
        if isinstance(chunk, ToolCallChunk)
    )


async def test_whole_call_without_index_is_one_chunk(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery, Reply.sse(recording("openai", "whole_call_no_index"))
    )
    with trio.fail_after(5):
        collected = await collect(make_model(server.url, client).stream([], []))
    assert [c for c in collected.chunks if isinstance(c, ToolCallChunk)] == [
        ToolCallChunk(None, "call_1", "calculator", '{"expression": "2+2"}'),
        ToolCallChunk(None, "call_2", "sleep", '{"seconds": 1}'),
    ]


async def test_utf8_character_split_across_tcp_reads(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    body = recording("openai", "text")
    inside_o_umlaut = body.index("ö".encode()) + 1
    inside_emoji = body.index("👋".encode()) + 2
    # The pause between pieces makes the client read each piece on its own.
    server = await start_provider_server(
        nursery, Reply.sse(body, cuts=[inside_o_umlaut, inside_emoji], gap=0.05)
    )
    with trio.fail_after(5):
        collected = await collect(make_model(server.url, client).stream([], []))
    assert collected.text == "Hello, wörld — 東京 👋!"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(name=st.sampled_from(sorted(EXPECTED)), data=st.data())
async def test_any_byte_split_gives_the_same_answer(name: str, data: st.DataObject) -> None:
    body = recording("openai", name)
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
        Reply.sse(recording("openai", "parallel_sequential")),
        Reply.sse(recording("openai", "text")),
    )
    model = make_model(server.url, client, max_tokens=256)
    question = Message("user", "Weather and time in Paris?")
    with trio.fail_after(5):
        first = await collect(model.stream([question], [WEATHER, TIME]))
    # What the agent loop puts in the conversation after step 1 (one tool failed).
    calls = tuple(
        ToolCallRecord(call_id, name, args, raw)
        for (call_id, name, raw), args in zip(
            first.calls.values(), first.arguments().values(), strict=True
        )
    )
    conversation = [
        question,
        Message("assistant", first.text, tool_calls=calls),
        Message("tool", '{"temp_c": 21}', call_id="call_A", name="get_weather", status="ok"),
        Message("tool", "error: no clock", call_id="call_B", name="get_time", status="error"),
        Message("user", "And in Zürich?"),
    ]
    with trio.fail_after(5):
        second = await collect(model.stream(conversation, [WEATHER, TIME]))
    assert second.text == "Hello, wörld — 東京 👋!"
    assert len(server.requests) == 2
    body = server.requests[1].json()
    assert body == {
        "model": "gpt-4o-mini",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 256,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            },
            {
                "type": "function",
                "function": {
                    "name": "get_time",
                    "description": "The current time",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
        ],
        "messages": [
            {"role": "user", "content": "Weather and time in Paris?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {
                        "id": "call_A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_B",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_A", "content": '{"temp_c": 21}'},
            {"role": "tool", "tool_call_id": "call_B", "content": "error: no clock"},
            {"role": "user", "content": "And in Zürich?"},
        ],
    }
    # The first request had no history and no max_tokens unless asked.
    assert server.requests[0].json()["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"}
    ]


def test_assistant_messages_without_calls_or_with_unparseable_arguments() -> None:
    model = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    body = model.request_body(
        [
            Message("assistant", "cut sho", cut=True),
            Message(
                "assistant",
                "",
                tool_calls=(
                    ToolCallRecord("c1", "write", None, '{"path": "/tm'),
                    ToolCallRecord("c2", "now", {}, ""),
                ),
            ),
        ],
        [],
    )
    assert body["messages"] == [
        {"role": "assistant", "content": "cut sho"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "write", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
            ],
        },
    ]
    assert "tools" not in body


async def test_base_url_and_key_from_environment(
    nursery: trio.Nursery, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_provider_server(nursery, Reply.sse(recording("openai", "text")))
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    model = from_spec("openai:llama3:8b", client=client)
    assert isinstance(model, OpenAIChatModel)
    with trio.fail_after(5):
        collected = await collect(model.stream([Message("user", "hi")], []))
    assert collected.text == "Hello, wörld — 東京 👋!"
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-from-env"
    assert request.json()["model"] == "llama3:8b"
    assert "tools" not in request.json()


def test_base_url_default_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAIChatModel("m").url == "https://api.openai.com/v1/chat/completions"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.invalid/v1")
    assert OpenAIChatModel("m", base_url="http://arg.invalid/v1").url == (
        "http://arg.invalid/v1/chat/completions"
    )
    assert OpenAIChatModel("m").url == "http://env.invalid/v1/chat/completions"


async def test_local_server_without_key_sends_no_authorization(
    nursery: trio.Nursery, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = await start_provider_server(nursery, Reply.sse(recording("openai", "text")))
    model = OpenAIChatModel("m", base_url=f"{server.url}/v1", client=client)
    with trio.fail_after(5):
        await collect(model.stream([], []))
    assert "authorization" not in server.requests[0].headers


async def test_model_closes_only_the_client_it_made(client: httpx.AsyncClient) -> None:
    shared = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", client=client)
    await shared.aclose()
    assert not client.is_closed
    own = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1")
    await own.aclose()
    assert own.client.is_closed


async def test_chunks_are_yielded_as_they_arrive(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    # The server sends the first text chunk and then waits: the chunk must reach the
    # consumer before the rest of the body exists.
    body = recording("openai", "text")
    first_text = body.index(b'"Hel"')
    cut = body.index(b"\n\n", first_text) + 2
    server = await start_provider_server(nursery, Reply.sse(body[:cut], stall=True))
    stream = make_model(server.url, client).stream([], [])
    with trio.fail_after(5):
        first = await anext(stream)
        assert first == TextDelta("Hel")
        await stream.aclose()


async def test_connection_is_reused_between_steps(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery,
        Reply.sse(recording("openai", "text")),
        Reply.sse(recording("openai", "tool_call_with_role")),
    )
    model = make_model(server.url, client)
    with trio.fail_after(5):
        await collect(model.stream([Message("user", "hi")], []))
        assert open_responses(client) == 0  # read to its end and released (reused below)
        await collect(model.stream([Message("user", "hi")], []))
    first, second = server.requests
    assert first.client_port == second.client_port
