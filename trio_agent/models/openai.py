"""OpenAI-compatible Chat Completions, streamed (OpenAI, vLLM, llama.cpp, Ollama, gateways).

The request is ``POST {base_url}/chat/completions`` with ``stream: true``; the base URL
includes ``/v1``, as the official SDK takes it.  The stream is a series of
``chat.completion.chunk`` objects in SSE ``data`` fields, ended by ``data: [DONE]``:

- ``choices[0].delta.content`` → :class:`TextDelta`;
- ``delta.reasoning_content`` (DeepSeek, vLLM) and ``delta.reasoning`` (OpenRouter,
  Ollama) → :class:`ReasoningDelta`, never mixed into the answer;
- ``delta.tool_calls[]`` → :class:`ToolCallChunk` keyed by the call's ``index``; a call
  that comes without ``index`` is a whole call (``index=None``);
- ``choices[0].finish_reason`` and the final ``usage`` chunk (whose ``choices`` is
  empty, asked for with ``stream_options.include_usage``) → :class:`Finish`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import httpx
import orjson

from .._core.model import (
    Chunk,
    Finish,
    Message,
    ModelError,
    ReasoningDelta,
    Retrying,
    TextDelta,
    ToolCallChunk,
    ToolCallRecord,
    ToolSpec,
    Usage,
)
from .http import HTTPModel, ProviderRequest, decode_json, drain, stream_sse
from .retry import DEFAULT_RETRY, RetryPolicy

__all__ = ["DEFAULT_OPENAI_BASE_URL", "OPENAI_BASE_URL_ENV", "OPENAI_KEY_ENV", "OpenAIChatModel"]

#: Where requests go when neither the argument nor the environment names a server.
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
#: Environment variable holding the base URL (including ``/v1``), as the SDK reads it.
OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"
#: Environment variable holding the API key, as the SDK reads it.
OPENAI_KEY_ENV = "OPENAI_API_KEY"

#: The data field that ends a Chat Completions stream.
DONE_SENTINEL = "[DONE]"
#: The name used for this provider in error messages.
PROVIDER = "OpenAI-compatible server"


class OpenAIChatModel(HTTPModel):
    """A model served over the Chat Completions streaming API.

    ``base_url`` (else ``$OPENAI_BASE_URL``, else the OpenAI API) includes ``/v1``;
    ``api_key`` (else ``$OPENAI_API_KEY``) is sent as a bearer token, and may be absent
    for local servers that need none.  ``client`` is a shared connection pool, which
    stays the caller's to close; without one the model makes its own and closes it in
    :meth:`aclose`.  ``max_tokens`` caps the answer (the server's default when
    ``None``); ``system`` is sent as a leading system message; ``extra_body`` is merged
    into every request body (``temperature``, ``reasoning_effort``, …).
    """

    PROVIDER = PROVIDER
    provider_name = "openai"
    KEY_ENV = OPENAI_KEY_ENV
    BASE_URL_ENV = OPENAI_BASE_URL_ENV
    DEFAULT_BASE_URL = DEFAULT_OPENAI_BASE_URL
    PATH = "/chat/completions"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: httpx.AsyncClient | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        if not model:
            raise ValueError("OpenAIChatModel needs a model name, e.g. 'gpt-4o-mini'")
        super().__init__(
            model,
            base_url=base_url,
            api_key=api_key,
            client=client,
            system=system,
            extra_body=extra_body,
            extra_headers=extra_headers,
            retry=retry,
        )
        self.max_tokens = max_tokens

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        """The JSON body sent for one model call."""
        wire: list[dict[str, Any]] = []
        if self.system:
            wire.append({"role": "system", "content": self.system})
        wire.extend(to_openai_message(message) for message in messages)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": wire,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = [to_openai_tool(spec) for spec in tools]
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        body.update(self.extra_body)
        return body

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[Chunk, None]:
        """Stream one model call's chunks (see the module docstring)."""
        request = self.request(messages, tools)
        decoder = _ChunkDecoder(request)
        async with aclosing(stream_sse(self.client, request, self.retry)) as events:
            async for event in events:
                if isinstance(event, Retrying):
                    yield event
                    continue
                if event.data.strip() == DONE_SENTINEL:
                    await drain(events)
                    yield decoder.finish()
                    return
                if not event.data:
                    continue
                for chunk in decoder.feed(decode_json(event, request), event.event):
                    yield chunk
        # The body ended without [DONE]: some servers omit it, which is fine once a
        # finish_reason was seen; without one the answer was cut short.
        if decoder.finish_reason is None:
            raise ModelError(
                "connection",
                f"the {PROVIDER} stream from {self.url} ended before the answer was "
                "complete (no finish_reason and no [DONE])",
            )
        yield decoder.finish()


class _ChunkDecoder:
    """Maps decoded ``chat.completion.chunk`` objects to chunks; remembers the finish
    reason and the usage for the final :class:`Finish`."""

    def __init__(self, request: ProviderRequest) -> None:
        self._request = request
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def finish(self) -> Finish:
        return Finish(reason=self.finish_reason or "stop", usage=self.usage)

    def feed(self, data: object, event_name: str) -> list[Chunk]:
        if not isinstance(data, dict):
            raise self._protocol(event_name, f"expected a JSON object, got {data!r}")
        error = data.get("error")
        if error is not None:  # vLLM, OpenRouter and others report failures in-stream
            message = error.get("message") if isinstance(error, dict) else error
            raise ModelError("server_error", f"{PROVIDER} reported an error mid-stream: {message}")
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(
                input_tokens=_int(usage.get("prompt_tokens")),
                output_tokens=_int(usage.get("completion_tokens")),
            )
        choices = data.get("choices") or []
        if not isinstance(choices, list):
            raise self._protocol(event_name, f"'choices' is not a list: {choices!r}")
        chunks: list[Chunk] = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise self._protocol(event_name, f"a choice is not an object: {choice!r}")
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise self._protocol(event_name, f"'delta' is not an object: {delta!r}")
            for key in ("reasoning_content", "reasoning"):
                reasoning = delta.get(key)
                if isinstance(reasoning, str) and reasoning:
                    chunks.append(ReasoningDelta(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                chunks.append(TextDelta(content))
            calls = delta.get("tool_calls") or []
            if not isinstance(calls, list):
                raise self._protocol(event_name, f"'tool_calls' is not a list: {calls!r}")
            for call in calls:
                chunk = self._tool_call(call, event_name)
                if chunk is not None:
                    chunks.append(chunk)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason
        return chunks

    def _tool_call(self, call: object, event_name: str) -> ToolCallChunk | None:
        if not isinstance(call, dict):
            raise self._protocol(event_name, f"a tool call is not an object: {call!r}")
        index = call.get("index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise self._protocol(event_name, f"a tool call's index is not an integer: {index!r}")
        function = call.get("function") or {}
        if not isinstance(function, dict):
            raise self._protocol(event_name, f"a tool call's function is not an object: {call!r}")
        arguments = function.get("arguments")
        if arguments is None:
            arguments = ""
        elif not isinstance(arguments, str):
            # Some servers (Ollama) send the arguments already parsed.
            arguments = orjson.dumps(arguments).decode()
        call_id = call.get("id") or None
        name = function.get("name") or None
        if index is not None and call_id is None and name is None and not arguments:
            return None  # an empty fragment says nothing
        return ToolCallChunk(
            index=index,
            call_id=call_id if isinstance(call_id, str) else None,
            name=name if isinstance(name, str) else None,
            arguments=arguments,
        )

    def _protocol(self, event_name: str, what: str) -> ModelError:
        return ModelError(
            "protocol",
            f"{PROVIDER} sent an unexpected chunk in SSE event {event_name!r} "
            f"from {self._request.url}: {what}",
        )


def to_openai_message(message: Message) -> dict[str, Any]:
    """One :class:`Message` in the Chat Completions format."""
    if message.role == "user":
        return {"role": "user", "content": message.content}
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.call_id, "content": message.content}
    wire: dict[str, Any] = {"role": "assistant", "content": message.content or None}
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments_text(call)},
            }
            for call in message.tool_calls
        ]
    elif wire["content"] is None:
        wire["content"] = ""
    return wire


def to_openai_tool(spec: ToolSpec) -> dict[str, Any]:
    """One :class:`ToolSpec` as a Chat Completions ``function`` tool."""
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": dict(spec.parameters),
        },
    }


def _arguments_text(call: ToolCallRecord) -> str:
    # The raw JSON as the model streamed it, so the model sees its own words; but an
    # empty or invalid text (a call cut short) goes back as "{}", which every server
    # accepts, and the tool result says what went wrong.
    if call.arguments is None or not call.raw_arguments.strip():
        return "{}" if call.arguments is None else orjson.dumps(dict(call.arguments)).decode()
    return call.raw_arguments


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
