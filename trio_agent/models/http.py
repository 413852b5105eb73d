"""What the HTTP providers share: the client, the retry policy, and one SSE request.

:func:`stream_sse` is the whole transport of a streaming model call.  It POSTs a JSON
body, retries what is worth retrying (HTTP 429, 5xx and failures to connect) *before*
any of the body has been seen, turns every other failure into a :class:`ModelError`
whose message a user can act on, and yields the response's server-sent events, decoded
by ``httpx-sse``.  The provider modules only build request bodies and map events to
chunks.

Cancellation: the response is closed in ``finally`` under a shielded, bounded cancel
scope, so a consumer that is cancelled (a hard interrupt) or that ``aclose()``\\s the
generator closes the connection at once.  ``trio.Cancelled`` is never caught here.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar, cast

import attrs
import httpx
import orjson
import trio
from httpx_sse import EventSource, ServerSentEvent, SSEError

from .._core.model import Message, ModelError, Retrying, ToolSpec
from .failures import (
    Failure,
    closed_before_answer,
    describe,
    read_error_detail,
    read_timeout,
    request_failure,
    snippet,
    status_failure,
)
from .retry import DEFAULT_RETRY, RetryPolicy

__all__ = [
    "CLOSE_TIMEOUT",
    "CONNECT_TIMEOUT",
    "DRAIN_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_KEEPALIVE_CONNECTIONS",
    "POOL_TIMEOUT",
    "READ_TIMEOUT",
    "STALE_CONNECTION_RETRIES",
    "WRITE_TIMEOUT",
    "HTTPModel",
    "ProviderRequest",
    "decode_json",
    "drain",
    "make_client",
    "resolve_base_url",
    "stream_sse",
]

# ---- timeouts and pool limits ---------------------------------------------------------

#: Seconds to open a TCP (and TLS) connection.  A provider that cannot be reached in
#: this long is down or unreachable; failing fast lets the retry policy try again.
CONNECT_TIMEOUT = 10.0
#: Seconds allowed between two reads of the response.  Reasoning models can think for
#: a long while before their first token and not every provider sends keep-alive
#: comments meanwhile, so this is generous; a stream silent for longer is stalled and
#: ends as ``ModelError("timeout", ...)``.
READ_TIMEOUT = 120.0
#: Seconds to send the request body (a long conversation is a large body).
WRITE_TIMEOUT = 30.0
#: Seconds to wait for a free connection from the pool before giving up.
POOL_TIMEOUT = 30.0
#: Connections open at once per client: a runtime's concurrent sessions share the pool,
#: and providers rate-limit well before this many parallel streams.
MAX_CONNECTIONS = 32
#: Idle connections kept for reuse between the steps of a run.
MAX_KEEPALIVE_CONNECTIONS = 8
#: Seconds allowed to read the rest of a body after the provider's final event (only
#: the end of the chunked encoding is left, already in flight), so that the connection
#: goes back to the pool for the next step instead of being closed.
DRAIN_TIMEOUT = 1.0
#: Seconds allowed to close a response on the way out (under a shield, even when the
#: caller is cancelled); closing an HTTP/1.1 stream only closes a socket, so this is a
#: safety net rather than an expected wait.
CLOSE_TIMEOUT = 2.0
#: Times a request whose connection closed before any answer is sent again at once, on
#: a new connection, before the retry policy counts it: a pooled keep-alive connection
#: the server has just closed looks like this (llama.cpp's server closes the connection
#: after every streamed answer, so the next step's request meets the close about one
#: time in ten).  One: a second such failure in a row is the server, not the pool.
STALE_CONNECTION_RETRIES = 1


def make_client(
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
    pool_timeout: float = POOL_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_keepalive_connections: int = MAX_KEEPALIVE_CONNECTIONS,
    trust_env: bool = True,
    wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (a connection pool) set up for streaming model calls.

    Whoever creates the client owns it and must ``aclose()`` it; a model that makes its
    own closes it in its ``aclose()``.  ``trust_env`` keeps httpx's reading of the proxy
    and certificate environment variables.  ``wrap_transport`` wraps the pool's
    transport (httpx's transport API: to observe or change each request — tests count
    the response streams left open with it).
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_keepalive_connections
    )
    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(
        limits=limits, trust_env=trust_env
    )
    if wrap_transport is not None:
        transport = wrap_transport(transport)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout
        ),
        transport=transport,
        trust_env=trust_env,
    )


def resolve_base_url(given: str | None, env: str, default: str) -> str:
    """The base URL from the argument, else ``$env``, else ``default``; checked to be an
    http(s) URL (``ValueError`` naming where it came from) and without a trailing slash."""
    if given:
        url, source = given, "the base_url argument"
    elif os.environ.get(env):
        url, source = os.environ[env], f"${env}"
    else:
        url, source = default, "the default"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"base URL {url!r} (from {source}) is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f"base URL {url!r} (from {source}) is not an http:// or https:// URL "
            "(e.g. http://127.0.0.1:8000/v1)"
        )
    return url.rstrip("/")


@attrs.frozen(slots=True)
class ProviderRequest:
    """One streaming request, and what to say when it fails.

    ``provider`` names the service in messages ("OpenAI-compatible", "Anthropic");
    ``key_env`` is the environment variable that holds its key, named by auth errors;
    ``has_key`` says whether a key was sent at all.
    """

    provider: str
    key_env: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    has_key: bool = True


async def stream_sse(
    client: httpx.AsyncClient,
    request: ProviderRequest,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> AsyncGenerator[ServerSentEvent | Retrying, None]:
    """POST ``request`` and yield its server-sent events.

    Retryable failures (429, 5xx, failure to connect or a connection closed before any
    response) are retried per ``retry``; each retry first yields a :class:`Retrying`
    and then sleeps.  A connection closed before any response is first sent again at
    once, ``STALE_CONNECTION_RETRIES`` times, without a word (a stale pooled
    connection).  Nothing is retried once the response's body has begun.  Every
    failure that ends the call raises :class:`ModelError`.
    """
    headers = {
        **request.headers,
        "accept": "text/event-stream",
        "cache-control": "no-store",
        "content-type": "application/json",
    }
    attempt = 0
    stale = 0
    while True:
        attempt += 1
        failure: Failure
        try:
            response = await client.send(
                client.build_request("POST", request.url, headers=headers, content=request.body),
                stream=True,
            )
        except httpx.HTTPError as exc:
            if closed_before_answer(exc) and stale < STALE_CONNECTION_RETRIES:
                stale += 1
                attempt -= 1
                continue
            failure = request_failure(client, request, exc)
        else:
            try:
                if response.status_code >= 400:
                    failure = await status_failure(request, response)
                else:
                    async with aclosing(_events(client, request, response)) as events:
                        async for event in events:
                            yield event
                    return
            finally:
                await _close(response)
        if not failure.retryable:
            raise ModelError(failure.code, failure.message)
        if attempt >= retry.max_attempts:
            raise ModelError(failure.code, f"{failure.message} (gave up after {attempt} attempts)")
        delay = retry.delay(attempt, failure.retry_after)
        yield Retrying(
            code=failure.code,
            message=(
                f"{failure.message}; retrying in {delay:.3g}s "
                f"(attempt {attempt} of {retry.max_attempts} failed)"
            ),
            attempt=attempt,
            delay=delay,
        )
        await trio.sleep(delay)


async def drain(events: AsyncIterator[object]) -> None:
    """Read what is left of a stream after its final event, ignoring it, for at most
    DRAIN_TIMEOUT seconds: a response read to its end leaves its connection in the pool
    for reuse, where one closed early must close its connection."""
    with trio.move_on_after(DRAIN_TIMEOUT):
        try:
            async for _ in events:
                pass
        except ModelError:
            pass  # the answer is complete; a failure after it changes nothing


def decode_json(event: ServerSentEvent, request: ProviderRequest) -> Any:
    """The JSON in an event's ``data`` field, or ``ModelError("protocol")`` naming the
    event and quoting the start of the data."""
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise ModelError(
            "protocol",
            f"{request.provider} sent malformed JSON in the data of SSE event "
            f"{event.event!r} from {request.url}: {exc}; data: "
            f"{snippet(event.data)}",
        ) from None


# ---- internals -------------------------------------------------------------------------


async def _events(
    client: httpx.AsyncClient, request: ProviderRequest, response: httpx.Response
) -> AsyncGenerator[ServerSentEvent, None]:
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type.partition(";")[0]:
        detail = await read_error_detail(response)
        raise ModelError(
            "protocol",
            f"{request.provider} answered {request.url} with HTTP {response.status_code} "
            f"and content-type {content_type!r}, not an event stream "
            f"(is the base URL right, and does the server stream?): {detail}",
        )
    source = EventSource(cast(httpx.Response, _EndWithBlankLine(response)))
    try:
        async with aclosing(source.aiter_sse()) as events:
            async for event in events:
                yield event
    except httpx.TimeoutException:
        raise ModelError(
            "timeout",
            f"the {request.provider} stream from {request.url} stalled: nothing arrived "
            f"for {read_timeout(client)} (read timeout)",
        ) from None
    except SSEError as exc:  # an httpx.TransportError: before the generic case
        raise ModelError(
            "protocol", f"{request.provider} sent a malformed event stream: {exc}"
        ) from None
    except httpx.DecodingError as exc:
        raise ModelError(
            "protocol", f"{request.provider} sent a body that could not be decoded: {exc}"
        ) from None
    except httpx.TransportError as exc:
        raise ModelError(
            "connection",
            f"the connection to {request.provider} at {request.url} dropped mid-stream: "
            f"{describe(exc)}",
        ) from None


class _EndWithBlankLine:
    """The part of a response ``EventSource`` reads, with a blank line after the body.

    An event is dispatched on the blank line that ends it; a stream whose last event has
    no trailing newline (some servers close right after the last ``data:``) would
    otherwise lose that event.  A blank line after a complete stream is a no-op.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.headers = response.headers
        self._response = response

    def aiter_text(self) -> AsyncIterator[str]:
        return _TextThenBlankLine(self._response.aiter_text())


class _TextThenBlankLine:
    # An iterator object, not an async generator, so it needs no aclose() of its own.
    def __init__(self, texts: AsyncIterator[str]) -> None:
        self._texts = texts
        self._ended = False

    def __aiter__(self) -> _TextThenBlankLine:
        return self

    async def __anext__(self) -> str:
        if self._ended:
            raise StopAsyncIteration
        try:
            return await anext(self._texts)
        except StopAsyncIteration:
            self._ended = True
            return "\n\n"


async def _close(response: httpx.Response) -> None:
    # Shielded so that a cancelled consumer still closes the socket; bounded so that a
    # misbehaving transport cannot hold the cancellation up.
    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        scope.shield = True
        await response.aclose()


class HTTPModel:
    """What the HTTP providers share: where to send, the key, the connection pool, the
    request options, and closing.

    A subclass names its provider (``PROVIDER``), its key's and base URL's environment
    variables (``KEY_ENV``, ``BASE_URL_ENV``), its default base URL and the path it
    appends, says how the key is sent (:meth:`auth_headers`) and builds the body
    (``request_body``).  ``client`` is a shared connection pool, which stays the
    caller's to close; without one the model makes its own and closes it in
    :meth:`aclose`.
    """

    PROVIDER: ClassVar[str]
    provider_name: ClassVar[str]
    """The OpenTelemetry ``gen_ai.provider.name`` (``Model.provider_name``)."""
    KEY_ENV: ClassVar[str]
    BASE_URL_ENV: ClassVar[str]
    DEFAULT_BASE_URL: ClassVar[str]
    PATH: ClassVar[str]

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str | None,
        client: httpx.AsyncClient | None,
        system: str | None,
        extra_body: Mapping[str, Any] | None,
        extra_headers: Mapping[str, str] | None,
        retry: RetryPolicy,
    ) -> None:
        self.model = model
        self.base_url = resolve_base_url(base_url, self.BASE_URL_ENV, self.DEFAULT_BASE_URL)
        self.url = f"{self.base_url}{self.PATH}"
        self._api_key = api_key if api_key is not None else os.environ.get(self.KEY_ENV)
        self._owns_client = client is None
        self.client = make_client() if client is None else client
        """The connection pool requests go through (the caller's, or made here and
        closed by :meth:`aclose`)."""
        self.system = system
        self.extra_body = dict(extra_body or {})
        """Fields merged into every request body (provider options)."""
        self.extra_headers = dict(extra_headers or {})
        """Headers sent with every request."""
        self.retry = retry

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"

    @property
    def model_name(self) -> str:
        """The model as requested (``Model.model_name``: the ``thinking`` events say it)."""
        return self.model

    def auth_headers(self, api_key: str) -> dict[str, str]:
        raise NotImplementedError

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ProviderRequest:
        """The request for one model call."""
        headers = dict(self.extra_headers)
        if self._api_key:
            headers.update(self.auth_headers(self._api_key))
        return ProviderRequest(
            provider=self.PROVIDER,
            key_env=self.KEY_ENV,
            url=self.url,
            headers=headers,
            body=orjson.dumps(self.request_body(messages, tools)),
            has_key=bool(self._api_key),
        )

    async def aclose(self) -> None:
        """Close the connection pool, if this model made it."""
        if self._owns_client:
            await self.client.aclose()
