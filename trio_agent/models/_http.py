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

import email.utils
import math
import os
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar, cast

import attrs
import httpx
import orjson
import trio
from httpx_sse import EventSource, ServerSentEvent, SSEError

from ._base import Message, ModelError, Retrying, ToolSpec

__all__ = [
    "BASE_DELAY",
    "CLOSE_TIMEOUT",
    "CONNECT_TIMEOUT",
    "DEFAULT_RETRY",
    "DRAIN_TIMEOUT",
    "ERROR_BODY_MAX_BYTES",
    "MAX_ATTEMPTS",
    "MAX_CONNECTIONS",
    "MAX_DELAY",
    "MAX_KEEPALIVE_CONNECTIONS",
    "MAX_RETRY_AFTER",
    "POOL_TIMEOUT",
    "READ_TIMEOUT",
    "WRITE_TIMEOUT",
    "HTTPModel",
    "ProviderRequest",
    "RetryPolicy",
    "decode_json",
    "drain",
    "make_client",
    "parse_retry_after",
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

# ---- retries ---------------------------------------------------------------------------

#: Attempts in all (the first one included) for a retryable failure: enough to ride out
#: a brief overload, few enough that a user waiting on a dead endpoint learns it soon.
MAX_ATTEMPTS = 3
#: Seconds of backoff before the first retry; it doubles with each further attempt.
BASE_DELAY = 0.5
#: Ceiling on the exponential backoff, in seconds.
MAX_DELAY = 8.0
#: Ceiling on a server's ``Retry-After``, in seconds: a server asking for minutes is
#: better reported than silently waited for.
MAX_RETRY_AFTER = 30.0
#: Fraction of each backoff delay that is random ("jitter"), so that clients that failed
#: together do not retry together.
JITTER = 0.5

# ---- error reporting -------------------------------------------------------------------

#: Bytes of an error response's body read to find the provider's message; error bodies
#: are small JSON documents, and a proxy's HTML error page need not be read whole.
ERROR_BODY_MAX_BYTES = 16 * 1024
#: Characters of an unparseable body quoted in an error message.
ERROR_SNIPPET_CHARS = 300

#: HTTP statuses retried besides 5xx: 429 is "too many requests".
RETRY_STATUSES = frozenset({429})


def make_client(
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
    pool_timeout: float = POOL_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_keepalive_connections: int = MAX_KEEPALIVE_CONNECTIONS,
    trust_env: bool = True,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (a connection pool) set up for streaming model calls.

    Whoever creates the client owns it and must ``aclose()`` it; a model that makes its
    own closes it in its ``aclose()``.  ``trust_env`` keeps httpx's reading of the proxy
    and certificate environment variables.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout
        ),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
        ),
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
class RetryPolicy:
    """How a failed model request is retried (before any of its body was streamed).

    ``max_attempts`` counts the first attempt.  The delay before retry *n* (1-based) is
    ``min(max_delay, base_delay * 2 ** (n - 1))``, of which the ``jitter`` fraction is
    random; a server's ``Retry-After`` (seconds or an HTTP date) replaces it, capped at
    ``max_retry_after``.
    """

    max_attempts: int = attrs.field(default=MAX_ATTEMPTS)
    base_delay: float = BASE_DELAY
    max_delay: float = MAX_DELAY
    max_retry_after: float = MAX_RETRY_AFTER
    jitter: float = JITTER

    @max_attempts.validator
    def _check_attempts(self, _attribute: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_attempts must be at least 1, not {value}")

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling * (1.0 - self.jitter * rand())

    def delay(
        self,
        attempt: int,
        retry_after: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """The wait before the next attempt: ``Retry-After`` if the server sent a valid
        one (capped), else :meth:`backoff`."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.max_retry_after)
        return self.backoff(attempt, rand)


#: The policy models use unless given another.
DEFAULT_RETRY = RetryPolicy()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or
    ``None`` when it is absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


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
    and then sleeps.  Nothing is retried once the response's body has begun.  Every
    failure that ends the call raises :class:`ModelError`.
    """
    headers = {
        **request.headers,
        "accept": "text/event-stream",
        "cache-control": "no-store",
        "content-type": "application/json",
    }
    attempt = 0
    while True:
        attempt += 1
        failure: _Failure
        try:
            response = await client.send(
                client.build_request("POST", request.url, headers=headers, content=request.body),
                stream=True,
            )
        except httpx.HTTPError as exc:
            failure = _request_failure(client, request, exc)
        else:
            try:
                if response.status_code >= 400:
                    failure = await _status_failure(request, response)
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
            f"{_snippet(event.data)}",
        ) from None


# ---- internals -------------------------------------------------------------------------


@attrs.frozen(slots=True)
class _Failure:
    code: str
    message: str
    retryable: bool
    retry_after: str | None = None


async def _events(
    client: httpx.AsyncClient, request: ProviderRequest, response: httpx.Response
) -> AsyncGenerator[ServerSentEvent, None]:
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type.partition(";")[0]:
        detail = await _read_error_detail(response)
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
            f"for {_read_timeout(client)} (read timeout)",
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
            f"{_describe(exc)}",
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


def _request_failure(
    client: httpx.AsyncClient, request: ProviderRequest, exc: httpx.HTTPError
) -> _Failure:
    where = f"{request.provider} at {request.url}"
    if isinstance(exc, httpx.ConnectTimeout):
        return _Failure(
            "timeout", f"connecting to {where} timed out after {_connect_timeout(client)}", True
        )
    if isinstance(exc, httpx.ConnectError):
        return _Failure("connection", f"could not connect to {where}: {_describe(exc)}", True)
    if isinstance(exc, httpx.ReadTimeout):
        return _Failure(
            "timeout",
            f"{where} did not answer within {_read_timeout(client)} (read timeout)",
            False,
        )
    if isinstance(exc, httpx.TimeoutException):  # write or pool
        return _Failure("timeout", f"request to {where} timed out: {_describe(exc)}", False)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        # Closed before any response: nothing was streamed, so trying again is safe (a
        # stale keep-alive connection closed by the server looks like this).
        return _Failure(
            "connection", f"{where} closed the connection without answering: {exc}", True
        )
    return _Failure("connection", f"request to {where} failed: {_describe(exc)}", False)


async def _status_failure(request: ProviderRequest, response: httpx.Response) -> _Failure:
    status = response.status_code
    detail = await _read_error_detail(response)
    provider = request.provider
    if status in (401, 403):
        if request.has_key:
            hint = f"check {request.key_env}"
        else:
            hint = f"no API key was given: set {request.key_env}"
        return _Failure(
            "auth", f"{provider} refused the API key (HTTP {status}: {detail}); {hint}", False
        )
    if status in RETRY_STATUSES:
        return _Failure(
            "rate_limited",
            f"{provider} is rate limiting (HTTP {status}): {detail}",
            True,
            response.headers.get("retry-after"),
        )
    if status >= 500:
        return _Failure(
            "server_error",
            f"{provider} server error (HTTP {status}): {detail}",
            True,
            response.headers.get("retry-after"),
        )
    hint = "; check the base URL and the model name" if status == 404 else ""
    return _Failure(
        "bad_request",
        f"{provider} rejected the request to {request.url} (HTTP {status}): {detail}{hint}",
        False,
    )


async def _read_error_detail(response: httpx.Response) -> str:
    """The provider's own error message, from at most ERROR_BODY_MAX_BYTES of body."""
    body = bytearray()
    try:
        async for data in response.aiter_bytes():
            body += data
            if len(body) >= ERROR_BODY_MAX_BYTES:
                break
    except httpx.HTTPError as exc:
        if not body:
            return f"(the error body could not be read: {_describe(exc)})"
    text = bytes(body[:ERROR_BODY_MAX_BYTES]).decode("utf-8", errors="replace")
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _snippet(text) if text.strip() else "(empty body)"
    return _error_message(parsed) or _snippet(text)


def _error_message(parsed: object) -> str | None:
    # OpenAI: {"error": {"message": ...}}; Anthropic: {"type": "error", "error":
    # {"type": ..., "message": ...}}; some gateways: {"error": "..."} or {"message": ...}.
    if not isinstance(parsed, dict):
        return None
    error = parsed.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        kind = error.get("type")
        if isinstance(message, str) and message:
            return f"{message} ({kind})" if isinstance(kind, str) and kind else message
    if isinstance(error, str) and error:
        return error
    message = parsed.get("message") or parsed.get("detail")
    return message if isinstance(message, str) and message else None


async def _close(response: httpx.Response) -> None:
    # Shielded so that a cancelled consumer still closes the socket; bounded so that a
    # misbehaving transport cannot hold the cancellation up.
    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        scope.shield = True
        await response.aclose()


def _snippet(text: str) -> str:
    text = text.strip()
    if len(text) > ERROR_SNIPPET_CHARS:
        text = text[:ERROR_SNIPPET_CHARS] + "…"
    return repr(text)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_timeout(client: httpx.AsyncClient) -> str:
    return _seconds(client.timeout.read)


def _connect_timeout(client: httpx.AsyncClient) -> str:
    return _seconds(client.timeout.connect)


def _seconds(value: float | None) -> str:
    return "(no limit)" if value is None else f"{value:g}s"


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
        self._client = make_client() if client is None else client
        self.system = system
        self._extra_body = dict(extra_body or {})
        self._extra_headers = dict(extra_headers or {})
        self.retry = retry

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        raise NotImplementedError

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ProviderRequest:
        """The request for one model call."""
        headers = dict(self._extra_headers)
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
            await self._client.aclose()
