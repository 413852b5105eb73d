"""How a failed model request becomes a :class:`~trio_agent.errors.ModelError` whose
message a user can act on: the provider's own error message from the body, the status,
the timeout that expired, and whether trying again may help."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import httpx
import orjson

from .retry import RETRY_STATUSES

if TYPE_CHECKING:
    from .http import ProviderRequest

__all__ = [
    "ERROR_BODY_MAX_BYTES",
    "ERROR_SNIPPET_CHARS",
    "Failure",
    "closed_before_answer",
    "connect_timeout",
    "describe",
    "read_error_detail",
    "read_timeout",
    "request_failure",
    "snippet",
    "status_failure",
]

#: Bytes of an error response's body read to find the provider's message; error bodies
#: are small JSON documents, and a proxy's HTML error page need not be read whole.
ERROR_BODY_MAX_BYTES = 16 * 1024
#: Characters of an unparseable body quoted in an error message.
ERROR_SNIPPET_CHARS = 300


@attrs.frozen(slots=True)
class Failure:
    code: str
    message: str
    retryable: bool
    retry_after: str | None = None


def closed_before_answer(exc: httpx.HTTPError) -> bool:
    """The server closed the connection before any byte of an answer: a request sent on
    a pooled keep-alive connection that the server had just closed (llama.cpp's server
    closes one after every streamed answer) fails so; nothing was streamed."""
    return isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError)


def request_failure(
    client: httpx.AsyncClient, request: ProviderRequest, exc: httpx.HTTPError
) -> Failure:
    where = f"{request.provider} at {request.url}"
    if isinstance(exc, httpx.ConnectTimeout):
        return Failure(
            "timeout", f"connecting to {where} timed out after {connect_timeout(client)}", True
        )
    if isinstance(exc, httpx.ConnectError):
        return Failure("connection", f"could not connect to {where}: {describe(exc)}", True)
    if isinstance(exc, httpx.ReadTimeout):
        return Failure(
            "timeout",
            f"{where} did not answer within {read_timeout(client)} (read timeout)",
            False,
        )
    if isinstance(exc, httpx.TimeoutException):  # write or pool
        return Failure("timeout", f"request to {where} timed out: {describe(exc)}", False)
    if closed_before_answer(exc):
        # Closed before any response: nothing was streamed, so trying again is safe (a
        # stale keep-alive connection closed by the server looks like this).
        return Failure(
            "connection", f"{where} closed the connection without answering: {exc}", True
        )
    return Failure("connection", f"request to {where} failed: {describe(exc)}", False)


async def status_failure(request: ProviderRequest, response: httpx.Response) -> Failure:
    status = response.status_code
    detail = await read_error_detail(response)
    provider = request.provider
    if status in (401, 403):
        if request.has_key:
            hint = f"check {request.key_env}"
        else:
            hint = f"no API key was given: set {request.key_env}"
        return Failure(
            "auth", f"{provider} refused the API key (HTTP {status}: {detail}); {hint}", False
        )
    if status in RETRY_STATUSES:
        return Failure(
            "rate_limited",
            f"{provider} is rate limiting (HTTP {status}): {detail}",
            True,
            response.headers.get("retry-after"),
        )
    if status >= 500:
        return Failure(
            "server_error",
            f"{provider} server error (HTTP {status}): {detail}",
            True,
            response.headers.get("retry-after"),
        )
    hint = "; check the base URL and the model name" if status == 404 else ""
    return Failure(
        "bad_request",
        f"{provider} rejected the request to {request.url} (HTTP {status}): {detail}{hint}",
        False,
    )


async def read_error_detail(response: httpx.Response) -> str:
    """The provider's own error message, from at most ERROR_BODY_MAX_BYTES of body."""
    body = bytearray()
    try:
        async for data in response.aiter_bytes():
            body += data
            if len(body) >= ERROR_BODY_MAX_BYTES:
                break
    except httpx.HTTPError as exc:
        if not body:
            return f"(the error body could not be read: {describe(exc)})"
    text = bytes(body[:ERROR_BODY_MAX_BYTES]).decode("utf-8", errors="replace")
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return snippet(text) if text.strip() else "(empty body)"
    return error_message(parsed) or snippet(text)


def error_message(parsed: object) -> str | None:
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


def snippet(text: str) -> str:
    text = text.strip()
    if len(text) > ERROR_SNIPPET_CHARS:
        text = text[:ERROR_SNIPPET_CHARS] + "…"
    return repr(text)


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_timeout(client: httpx.AsyncClient) -> str:
    return seconds(client.timeout.read)


def connect_timeout(client: httpx.AsyncClient) -> str:
    return seconds(client.timeout.connect)


def seconds(value: float | None) -> str:
    return "(no limit)" if value is None else f"{value:g}s"
