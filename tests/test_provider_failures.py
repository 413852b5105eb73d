"""How the HTTP providers fail: against a real server that stalls, refuses, drops and lies."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
from provider_server import (
    Reply,
    collect,
    collect_until_error,
    counting_client,
    open_responses,
    recording,
    start_provider_server,
)

from trio_agent.models import (
    AnthropicModel,
    Finish,
    Message,
    Model,
    OpenAIChatModel,
    Retrying,
    RetryPolicy,
    TextDelta,
    from_spec,
    make_client,
)
from trio_agent.models.retry import parse_retry_after

#: A policy that retries at once, so tests of retries do not wait.
QUICK = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)

OPENAI_URL = r"http://127\.0\.0\.1:\d+/v1/chat/completions"
ANTHROPIC_URL = r"http://127\.0\.0\.1:\d+/v1/messages"

Factory = Callable[..., OpenAIChatModel | AnthropicModel]


def openai(url: str, client: httpx.AsyncClient, **kwargs: Any) -> OpenAIChatModel:
    kwargs.setdefault("api_key", "sk-test")
    kwargs.setdefault("retry", QUICK)
    return OpenAIChatModel("gpt-4o-mini", base_url=f"{url}/v1", client=client, **kwargs)


def anthropic(url: str, client: httpx.AsyncClient, **kwargs: Any) -> AnthropicModel:
    kwargs.setdefault("api_key", "sk-ant-test")
    kwargs.setdefault("retry", QUICK)
    return AnthropicModel("claude-sonnet-4-5", base_url=url, client=client, **kwargs)


PROVIDERS = pytest.mark.parametrize(
    ("provider", "factory"), [("openai", openai), ("anthropic", anthropic)]
)

PROMPT = [Message("user", "hi")]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with counting_client() as client:
        yield client


def cut_after(body: bytes, marker: bytes) -> bytes:
    """``body`` up to and including the event that contains ``marker``."""
    return body[: body.index(b"\n\n", body.index(marker)) + 2]


# ---- timeouts ---------------------------------------------------------------------------


@PROVIDERS
async def test_stalled_stream_times_out(
    provider: str, factory: Factory, nursery: trio.Nursery
) -> None:
    body = recording(provider, "text")
    server = await start_provider_server(
        nursery, Reply.sse(cut_after(body, "wörld".encode()), stall=True)
    )
    async with make_client(read_timeout=0.2, trust_env=False) as client:
        with trio.fail_after(5):
            before, error = await collect_until_error(
                factory(server.url, client).stream(PROMPT, [])
            )
    assert error.code == "timeout"
    assert error.retryable is False
    assert error.message.endswith("stalled: nothing arrived for 0.2s (read timeout)")
    assert before.text == "Hello, wörld"
    assert len(server.requests) == 1  # a stream that has begun is never retried


@PROVIDERS
async def test_no_answer_times_out(provider: str, factory: Factory, nursery: trio.Nursery) -> None:
    server = await start_provider_server(nursery, Reply(stall_before_headers=True))
    async with make_client(read_timeout=0.2, trust_env=False) as client:
        with trio.fail_after(5):
            before, error = await collect_until_error(
                factory(server.url, client).stream(PROMPT, [])
            )
    assert error.code == "timeout"
    url = OPENAI_URL if provider == "openai" else ANTHROPIC_URL
    assert re.fullmatch(rf".* at {url} did not answer within 0\.2s \(read timeout\)", error.message)
    assert before.chunks == []


# ---- retries ----------------------------------------------------------------------------


async def test_429_with_retry_after_then_200(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery,
        Reply.json(
            429,
            {
                "error": {
                    "message": "Rate limit reached for gpt-4o-mini on requests per min (RPM)",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            headers=[("retry-after", "1")],
        ),
        Reply.sse(recording("openai", "text")),
    )
    # Backoff would wait 100s; Retry-After (1s, capped here at 0.1s) must win.
    policy = RetryPolicy(max_attempts=2, base_delay=100, max_delay=100, max_retry_after=0.1)
    model = openai(server.url, client, retry=policy)
    retried_at = 0.0
    chunks = []
    with trio.fail_after(5):
        async for chunk in model.stream(PROMPT, []):
            if isinstance(chunk, Retrying):
                retried_at = trio.current_time()
            chunks.append(chunk)
    assert chunks[0] == Retrying(
        code="rate_limited",
        message=(
            "OpenAI-compatible server is rate limiting (HTTP 429): Rate limit reached for "
            "gpt-4o-mini on requests per min (RPM) (requests); retrying in 0.1s "
            "(attempt 1 of 2 failed)"
        ),
        attempt=1,
        delay=0.1,
    )
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "Hello, wörld — 東京 👋!"
    assert isinstance(chunks[-1], Finish)
    # Retrying came before the sleep, and the second request after it.
    first, second = server.requests
    assert first.body == second.body
    assert second.time - retried_at >= 0.09


@PROVIDERS
async def test_500_three_times_gives_up_with_the_attempt_count(
    provider: str, factory: Factory, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    error_body = {"error": {"message": "The server had an error processing your request."}}
    server = await start_provider_server(nursery, *[Reply.json(500, error_body)] * 3)
    with trio.fail_after(5):
        before, error = await collect_until_error(factory(server.url, client).stream(PROMPT, []))
    name = "OpenAI-compatible server" if provider == "openai" else "Anthropic"
    assert error.code == "server_error"
    assert error.message == (
        f"{name} server error (HTTP 500): The server had an error processing your request. "
        "(gave up after 3 attempts)"
    )
    assert [(r.code, r.attempt) for r in before.retries] == [
        ("server_error", 1),
        ("server_error", 2),
    ]
    assert before.chunks == before.retries  # nothing but the retry notices
    assert len(server.requests) == 3


async def test_anthropic_529_overloaded_then_200(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery,
        Reply.json(
            529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        ),
        Reply.sse(recording("anthropic", "tool_use")),
    )
    with trio.fail_after(5):
        collected = await collect(anthropic(server.url, client).stream(PROMPT, []))
    assert [(r.code, r.attempt) for r in collected.retries] == [("server_error", 1)]
    assert collected.retries[0].message.startswith(
        "Anthropic server error (HTTP 529): Overloaded (overloaded_error); retrying in "
    )
    assert collected.chunks[0] is collected.retries[0]
    assert collected.arguments() == {1: {"city": "Zürich", "unit": "celsius", "alt": "東京"}}


async def test_connect_errors_are_retried(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(5):
        before, error = await collect_until_error(
            openai(f"http://127.0.0.1:{port}", client).stream(PROMPT, [])
        )
    assert error.code == "connection"
    assert error.message.startswith(
        f"could not connect to OpenAI-compatible server at http://127.0.0.1:{port}/v1/chat/"
        "completions: ConnectError"
    )
    assert error.message.endswith("(gave up after 3 attempts)")
    assert [r.code for r in before.retries] == ["connection", "connection"]


class ClosedBeforeAnswer(httpx.AsyncBaseTransport):
    """The first ``times`` requests meet a connection the server closed as they went
    out (what a pooled keep-alive connection the server has just closed looks like)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, times: int) -> None:
        self.inner = inner
        self.times = times
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.sent <= self.times:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize(("closed", "retries"), [(1, 0), (2, 1), (3, 2)])
async def test_a_connection_closed_before_any_answer_is_sent_again_at_once(
    nursery: trio.Nursery, closed: int, retries: int
) -> None:
    server = await start_provider_server(nursery, Reply.sse(recording("openai", "text")))
    made: list[ClosedBeforeAnswer] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        made.append(ClosedBeforeAnswer(inner, closed))
        return made[0]

    async with make_client(trust_env=False, wrap_transport=wrap) as pool:
        with trio.fail_after(5):
            collected = await collect(openai(server.url, pool).stream(PROMPT, []))
    # Once: sent again at once and silently (a stale pooled connection); more: the
    # retry policy's business, each retry said.
    assert made[0].sent == closed + 1
    assert [r.code for r in collected.retries] == ["connection"] * retries
    assert all("closed the connection without answering" in r.message for r in collected.retries)
    assert collected.text == "Hello, wörld — 東京 👋!"


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, max_retry_after=30.0, jitter=0.5)
    assert [policy.backoff(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]
    assert [policy.backoff(n, rand=lambda: 1.0) for n in (1, 2, 3)] == [0.5, 1, 2]
    assert policy.delay(1, "7") == 7.0
    assert policy.delay(1, "3600") == 30.0  # capped
    assert policy.delay(1, "soon", rand=lambda: 0.0) == 1.0  # unreadable: backoff
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None
    with pytest.raises(ValueError, match=r"^max_attempts must be at least 1, not 0$"):
        RetryPolicy(max_attempts=0)


# ---- refusals ---------------------------------------------------------------------------


async def test_openai_401_names_the_key_variable(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery,
        Reply.json(
            401,
            {
                "error": {
                    "message": "Incorrect API key provided: sk-test.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        ),
    )
    with trio.fail_after(5):
        before, error = await collect_until_error(openai(server.url, client).stream(PROMPT, []))
    assert error.code == "auth"
    assert error.message == (
        "OpenAI-compatible server refused the API key (HTTP 401: Incorrect API key provided: "
        "sk-test. (invalid_request_error)); check OPENAI_API_KEY"
    )
    assert before.chunks == []
    assert len(server.requests) == 1  # not retried


async def test_anthropic_403_without_a_key_says_to_set_it(
    nursery: trio.Nursery, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    server = await start_provider_server(
        nursery,
        Reply.json(
            403,
            {"type": "error", "error": {"type": "permission_error", "message": "no key"}},
        ),
    )
    with trio.fail_after(5):
        _, error = await collect_until_error(
            anthropic(server.url, client, api_key=None).stream(PROMPT, [])
        )
    assert error.code == "auth"
    assert error.message == (
        "Anthropic refused the API key (HTTP 403: no key (permission_error)); "
        "no API key was given: set ANTHROPIC_API_KEY"
    )
    assert "x-api-key" not in server.requests[0].headers


@PROVIDERS
async def test_400_gives_the_providers_message(
    provider: str, factory: Factory, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    if provider == "openai":
        payload: dict[str, Any] = {
            "error": {
                "message": "Invalid 'messages[0].content': string too long.",
                "type": "invalid_request_error",
                "param": "messages[0].content",
                "code": "string_above_max_length",
            }
        }
        detail = "Invalid 'messages[0].content': string too long. (invalid_request_error)"
    else:
        payload = {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "max_tokens: 100000 > 64000, the maximum for this model",
            },
        }
        detail = "max_tokens: 100000 > 64000, the maximum for this model (invalid_request_error)"
    server = await start_provider_server(nursery, Reply.json(400, payload))
    with trio.fail_after(5):
        _, error = await collect_until_error(factory(server.url, client).stream(PROMPT, []))
    assert error.code == "bad_request"
    assert error.message.endswith(f"(HTTP 400): {detail}")
    assert len(server.requests) == 1


async def test_404_hints_at_the_base_url(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    server = await start_provider_server(
        nursery,
        Reply(status=404, headers=(("content-type", "text/plain"),), pieces=(b"Not Found",)),
    )
    with trio.fail_after(5):
        _, error = await collect_until_error(openai(server.url, client).stream(PROMPT, []))
    assert error.code == "bad_request"
    assert error.message.endswith("(HTTP 404): 'Not Found'; check the base URL and the model name")


async def test_200_that_is_not_an_event_stream(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery, Reply.json(200, {"error": {"message": "streaming is disabled"}})
    )
    with trio.fail_after(5):
        _, error = await collect_until_error(openai(server.url, client).stream(PROMPT, []))
    assert error.code == "protocol"
    assert "content-type 'application/json', not an event stream" in error.message
    assert error.message.endswith(": streaming is disabled")


# ---- broken streams ---------------------------------------------------------------------


@PROVIDERS
async def test_connection_dropped_mid_stream(
    provider: str, factory: Factory, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    name = "tool_call_with_role" if provider == "openai" else "tool_use"
    body = recording(provider, name)
    server = await start_provider_server(nursery, Reply.sse(cut_after(body, b"rich"), drop=True))
    with trio.fail_after(5):
        before, error = await collect_until_error(factory(server.url, client).stream(PROMPT, []))
    url = OPENAI_URL if provider == "openai" else ANTHROPIC_URL
    assert error.code == "connection"
    assert re.fullmatch(
        rf"the connection to .* at {url} dropped mid-stream: RemoteProtocolError: .*", error.message
    )
    assert before.calls  # the call had begun: the agent loop ends it `cancelled`
    assert before.finish is None
    assert len(server.requests) == 1  # a stream that has begun is never retried


@PROVIDERS
async def test_stream_ending_before_the_answer_is_complete(
    provider: str, factory: Factory, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    body = recording(provider, "text")
    server = await start_provider_server(nursery, Reply.sse(cut_after(body, "wörld".encode())))
    with trio.fail_after(5):
        before, error = await collect_until_error(factory(server.url, client).stream(PROMPT, []))
    assert error.code == "connection"
    assert "ended before the" in error.message
    assert before.text == "Hello, wörld"


async def test_openai_malformed_data_names_the_event(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(nursery, Reply.sse(recording("openai", "malformed")))
    with trio.fail_after(5):
        before, error = await collect_until_error(openai(server.url, client).stream(PROMPT, []))
    assert error.code == "protocol"
    assert error.message.startswith(
        "OpenAI-compatible server sent malformed JSON in the data of SSE event 'message' from "
        "http://127.0.0.1:"
    )
    assert error.message.endswith(
        """data: '{"id":"chatcmpl-AaBbCc8","object":"chat.completion.chunk","choices":"""
        """[{"index":0,"delta":{"content":" th'"""
    )
    assert before.text == "Hi"


async def test_anthropic_malformed_data_names_the_event(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(nursery, Reply.sse(recording("anthropic", "malformed")))
    with trio.fail_after(5):
        _, error = await collect_until_error(anthropic(server.url, client).stream(PROMPT, []))
    assert error.code == "protocol"
    assert error.message.startswith(
        "Anthropic sent malformed JSON in the data of SSE event 'content_block_delta' from"
    )


async def test_anthropic_error_event_mid_stream(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(nursery, Reply.sse(recording("anthropic", "error_event")))
    with trio.fail_after(5):
        before, error = await collect_until_error(anthropic(server.url, client).stream(PROMPT, []))
    assert error.code == "server_error"
    assert error.message == "Anthropic reported an error mid-stream (overloaded_error): Overloaded"
    assert before.text == "Partial"
    assert len(server.requests) == 1


# ---- cancellation -----------------------------------------------------------------------


@PROVIDERS
async def test_hard_interrupt_closes_the_connection(
    provider: str, factory: Factory, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    """The agent loop's hard interrupt: the step's scope is cancelled while the consumer
    waits for the next chunk, then the generator is aclose()d.  The server must see the
    client go at once, with the connection not parked in the pool."""
    body = recording(provider, "text")
    server = await start_provider_server(nursery, Reply.sse(cut_after(body, b"Hel"), stall=True))
    got_text = trio.Event()
    consumer_done = trio.Event()
    step_scope = trio.CancelScope()

    async def step() -> None:
        stream = factory(server.url, client).stream(PROMPT, [])
        try:
            with step_scope:
                async for chunk in stream:
                    if isinstance(chunk, TextDelta):
                        got_text.set()
        finally:
            await stream.aclose()
            consumer_done.set()

    nursery.start_soon(step)
    with trio.fail_after(5):
        await got_text.wait()
        assert not server.disconnected.is_set()
        step_scope.cancel()
        await consumer_done.wait()
        await server.disconnected.wait()
    assert step_scope.cancelled_caught
    assert server.disconnects == 1


@PROVIDERS
async def test_aclose_at_a_yield_closes_the_connection(
    provider: str, factory: Factory, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    """A consumer that stops reading (aclose() while the generator waits at a yield)."""
    body = recording(provider, "text")
    server = await start_provider_server(nursery, Reply.sse(cut_after(body, b"Hel"), stall=True))
    stream = factory(server.url, client).stream(PROMPT, [])
    with trio.fail_after(5):
        async for chunk in stream:
            if isinstance(chunk, TextDelta):
                break
        assert open_responses(client) == 1
        await stream.aclose()
        assert open_responses(client) == 0  # at once, not when garbage-collected
        await server.disconnected.wait()


@PROVIDERS
async def test_aclose_in_a_cancelled_scope_closes_the_connection(
    provider: str, factory: Factory, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    """The hard interrupt when the consumer was busy with a chunk: the step's scope is
    already cancelled when it aclose()s the generator, which waits at a yield."""
    body = recording(provider, "text")
    server = await start_provider_server(nursery, Reply.sse(cut_after(body, b"Hel"), stall=True))
    stream = factory(server.url, client).stream(PROMPT, [])
    with trio.fail_after(5):
        while not isinstance(await anext(stream), TextDelta):
            pass
        with trio.CancelScope() as step_scope:
            step_scope.cancel()
            await stream.aclose()
        assert open_responses(client) == 0
        await server.disconnected.wait()


async def test_cancelled_during_retry_sleep_propagates(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_provider_server(
        nursery,
        Reply.json(503, {"error": {"message": "busy"}}),
        Reply.sse(recording("openai", "text")),
    )
    slow = RetryPolicy(base_delay=60, max_delay=60, jitter=0)
    stream = openai(server.url, client, retry=slow).stream(PROMPT, [])
    chunks = []
    with trio.move_on_after(0.2) as scope:
        async for chunk in stream:
            chunks.append(chunk)
    assert scope.cancelled_caught  # Cancelled went through, not swallowed
    await stream.aclose()
    assert len(server.requests) == 1
    assert [type(chunk) for chunk in chunks] == [Retrying]


# ---- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("gpt-4o", "unknown model spec 'gpt-4o'"),
        ("openai", "model spec 'openai' names no model"),
        ("openai:", "model spec 'openai:' names no model"),
        ("anthropic:", "model spec 'anthropic:' names no model"),
        ("scripted:", "model spec 'scripted:' names no script file"),
        ("claude:x", "unknown model spec 'claude:x'"),
    ],
)
def test_bad_spec(spec: str, problem: str) -> None:
    forms = "'scripted', 'scripted:FILE', 'openai:MODEL' or 'anthropic:MODEL'"
    with pytest.raises(ValueError) as info:
        from_spec(spec)
    assert str(info.value) == f"{problem}; expected {forms}"


def test_scripted_spec_refuses_a_base_url() -> None:
    with pytest.raises(
        ValueError,
        match=(
            r"^model spec 'scripted' is a scripted model: it takes no base URL, API key or "
            r"max_tokens$"
        ),
    ):
        from_spec("scripted", base_url="http://127.0.0.1:1/v1")


async def test_specs_build_their_models(client: httpx.AsyncClient) -> None:
    model = from_spec(
        "openai:gpt-4o-mini", base_url="http://h.invalid/v1", api_key="k", client=client
    )
    assert isinstance(model, OpenAIChatModel)
    assert (model.model, model.url) == ("gpt-4o-mini", "http://h.invalid/v1/chat/completions")
    model = from_spec("anthropic:claude-x", base_url="http://h.invalid", client=client)
    assert isinstance(model, AnthropicModel)
    assert (model.model, model.url) == ("claude-x", "http://h.invalid/v1/messages")
    assert isinstance(from_spec("scripted"), Model)
    # max_tokens: sent when given; Anthropic's model needs one and keeps its default.
    openai_model = from_spec("openai:m", base_url="http://h.invalid/v1", max_tokens=7)
    assert isinstance(openai_model, OpenAIChatModel)
    assert openai_model.request_body([], [])["max_tokens"] == 7
    openai_model = from_spec("openai:m", base_url="http://h.invalid/v1", client=client)
    assert isinstance(openai_model, OpenAIChatModel)
    assert "max_tokens" not in openai_model.request_body([], [])
    default = AnthropicModel("claude-x", client=client).max_tokens
    for given, expected in [(None, default), (9, 9)]:
        model = from_spec("anthropic:claude-x", client=client, max_tokens=given)
        assert isinstance(model, AnthropicModel) and model.max_tokens == expected
    with pytest.raises(ValueError, match=r"^max_tokens must be at least 1, not 0$"):
        from_spec("openai:m", max_tokens=0)


def test_base_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ValueError,
        match=(
            r"^base URL 'localhost:8000/v1' \(from the base_url argument\) is not an http:// "
            r"or https:// URL \(e\.g\. http://127\.0\.0\.1:8000/v1\)$"
        ),
    ):
        OpenAIChatModel("m", base_url="localhost:8000/v1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "ftp://example.com")
    with pytest.raises(
        ValueError, match=r"^base URL 'ftp://example\.com' \(from \$ANTHROPIC_BASE_URL\)"
    ):
        AnthropicModel("m")
