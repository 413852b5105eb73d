"""Anthropic Messages, streamed.

The request is ``POST {base_url}/v1/messages`` with ``stream: true``; the base URL is
the host root, as the official SDK takes it.  The stream's events map to chunks:

- ``message_start`` → the input token count;
- ``content_block_start``: a ``tool_use`` block → :class:`ToolCallChunk` (block index,
  id, name); ``text`` and ``thinking`` blocks start silently; a ``redacted_thinking``
  block → :class:`ReasoningEnd` with its opaque ``data``;
- ``content_block_delta``: ``text_delta`` → :class:`TextDelta`, ``thinking_delta`` →
  :class:`ReasoningDelta`, ``signature_delta`` is kept for the block's end,
  ``input_json_delta`` → a :class:`ToolCallChunk` fragment;
- ``content_block_stop`` of a ``tool_use`` block → :class:`ToolCallEnd` (a call whose
  only fragment was ``""`` has arguments ``{}``: the assembler reads empty text so); of
  a ``thinking`` block → :class:`ReasoningEnd` with the block's signature;
- ``message_delta`` → the stop reason and output token count; ``message_stop`` →
  :class:`Finish`; ``ping`` and unknown events are ignored; ``error`` → ModelError.

Thinking blocks go back as they came (text and signature, or redacted data) at the
head of their assistant message: with extended thinking on, the API refuses a tool-use
turn whose thinking blocks are missing.
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
    ReasoningEnd,
    Retrying,
    TextDelta,
    ToolCallChunk,
    ToolCallEnd,
    ToolSpec,
    Usage,
)
from .http import HTTPModel, ProviderRequest, decode_json, drain, stream_sse
from .retry import DEFAULT_RETRY, RetryPolicy

__all__ = [
    "ANTHROPIC_BASE_URL_ENV",
    "ANTHROPIC_KEY_ENV",
    "ANTHROPIC_VERSION",
    "DEFAULT_ANTHROPIC_BASE_URL",
    "DEFAULT_MAX_TOKENS",
    "AnthropicModel",
]

#: Where requests go when neither the argument nor the environment names a server.
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
#: Environment variable holding the base URL (the host root), as the SDK reads it.
ANTHROPIC_BASE_URL_ENV = "ANTHROPIC_BASE_URL"
#: Environment variable holding the API key, as the SDK reads it.
ANTHROPIC_KEY_ENV = "ANTHROPIC_API_KEY"
#: The API version this module speaks (the ``anthropic-version`` header).
ANTHROPIC_VERSION = "2023-06-01"
#: The API requires ``max_tokens``; 4096 fits every current model's output limit and
#: is ample for an agent step, which usually ends in a tool call or a short answer.
DEFAULT_MAX_TOKENS = 4096
#: The name used for this provider in error messages.
PROVIDER = "Anthropic"

# In-stream error types and the ModelError codes they become.
_ERROR_CODES = {
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "rate_limit_error": "rate_limited",
    "authentication_error": "auth",
    "permission_error": "auth",
    "invalid_request_error": "bad_request",
    "request_too_large": "bad_request",
}


class AnthropicModel(HTTPModel):
    """A model served over the Anthropic Messages streaming API.

    ``base_url`` (else ``$ANTHROPIC_BASE_URL``, else the Anthropic API) is the host
    root; ``api_key`` (else ``$ANTHROPIC_API_KEY``) goes in ``x-api-key``.  ``client``
    is a shared connection pool, which stays the caller's to close; without one the
    model makes its own and closes it in :meth:`aclose`.  ``max_tokens`` is required by
    the API; ``system`` is the system prompt; ``extra_body`` is merged into every
    request body (``temperature``, ``thinking``, …).
    """

    PROVIDER = PROVIDER
    provider_name = "anthropic"
    KEY_ENV = ANTHROPIC_KEY_ENV
    BASE_URL_ENV = ANTHROPIC_BASE_URL_ENV
    DEFAULT_BASE_URL = DEFAULT_ANTHROPIC_BASE_URL
    PATH = "/v1/messages"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: httpx.AsyncClient | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        system: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        if not model:
            raise ValueError("AnthropicModel needs a model name, e.g. 'claude-sonnet-4-5'")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
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
        self.extra_headers["anthropic-version"] = ANTHROPIC_VERSION

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        """The JSON body sent for one model call."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": to_anthropic_messages(messages),
            "stream": True,
        }
        if self.system:
            body["system"] = self.system
        if tools:
            body["tools"] = [to_anthropic_tool(spec) for spec in tools]
        body.update(self.extra_body)
        return body

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[Chunk, None]:
        """Stream one model call's chunks (see the module docstring)."""
        request = self.request(messages, tools)
        decoder = _EventDecoder(request)
        async with aclosing(stream_sse(self.client, request, self.retry)) as events:
            async for event in events:
                if isinstance(event, Retrying):
                    yield event
                    continue
                if not event.data:
                    continue
                chunks = decoder.feed(decode_json(event, request), event.event)
                if decoder.finished:  # message_stop: the last chunk is the Finish
                    await drain(events)
                for chunk in chunks:
                    yield chunk
                if decoder.finished:
                    return
        # The body ended without message_stop.  Once message_delta has given the stop
        # reason nothing is missing but the closing event; before that, the answer was
        # cut short.
        if decoder.stop_reason is None:
            raise ModelError(
                "connection",
                f"the {PROVIDER} stream from {self.url} ended before the message was "
                "complete (no message_delta and no message_stop)",
            )
        yield decoder.finish()


class _EventDecoder:
    """Maps decoded Messages stream events to chunks; remembers which content block is
    which, the stop reason and the usage."""

    def __init__(self, request: ProviderRequest) -> None:
        self._request = request
        self._blocks: dict[int, str] = {}
        self._signatures: dict[int, list[str]] = {}  # per thinking block
        self.stop_reason: str | None = None
        self.finished = False
        self._input_tokens = 0
        self._output_tokens = 0
        self._saw_usage = False

    def finish(self) -> Finish:
        usage = Usage(self._input_tokens, self._output_tokens) if self._saw_usage else None
        return Finish(reason=self.stop_reason or "end_turn", usage=usage)

    def feed(self, data: object, event_name: str) -> list[Chunk]:
        if not isinstance(data, dict):
            raise self._protocol(event_name, f"expected a JSON object, got {data!r}")
        kind = data.get("type", event_name)
        if kind == "message_start":
            message = data.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self._usage(usage)
            return []
        if kind == "content_block_start":
            return self._block_start(data, event_name)
        if kind == "content_block_delta":
            return self._block_delta(data, event_name)
        if kind == "content_block_stop":
            index = self._index(data, event_name)
            block_kind = self._blocks.get(index)
            if block_kind == "tool_use":
                return [ToolCallEnd(index)]
            if block_kind == "thinking":  # sealed: unsigned ("") if no signature came
                return [ReasoningEnd(signature="".join(self._signatures.pop(index, ())))]
            return []
        if kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
            usage = data.get("usage")
            if isinstance(usage, dict):
                self._usage(usage)
            return []
        if kind == "message_stop":
            self.finished = True
            return [self.finish()]
        if kind == "error":
            error = data.get("error")
            error = error if isinstance(error, dict) else {}
            error_type = str(error.get("type") or "error")
            message = error.get("message") or "(no message)"
            raise ModelError(
                _ERROR_CODES.get(error_type, "server_error"),
                f"{PROVIDER} reported an error mid-stream ({error_type}): {message}",
            )
        return []  # ping, and event types newer than this module

    def _block_start(self, data: dict[str, Any], event_name: str) -> list[Chunk]:
        index = self._index(data, event_name)
        block = data.get("content_block")
        if not isinstance(block, dict):
            raise self._protocol(event_name, f"'content_block' is not an object: {block!r}")
        kind = str(block.get("type"))
        self._blocks[index] = kind
        if kind == "text":
            text = block.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind == "tool_use":
            # The API starts "input" as {}; a server that sends the whole input here
            # instead of as deltas is taken at its word.
            given = block.get("input")
            arguments = orjson.dumps(given).decode() if given else ""
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise self._protocol(event_name, f"a tool_use block lacks id or name: {block!r}")
            return [ToolCallChunk(index=index, call_id=call_id, name=name, arguments=arguments)]
        if kind == "thinking":
            signature = block.get("signature")
            self._signatures[index] = [signature] if isinstance(signature, str) else []
            thinking = block.get("thinking")
            return [ReasoningDelta(thinking)] if isinstance(thinking, str) and thinking else []
        if kind == "redacted_thinking":
            redacted = block.get("data")
            if not isinstance(redacted, str):
                raise self._protocol(event_name, f"a redacted_thinking block lacks data: {block!r}")
            return [ReasoningEnd(redacted=redacted)]
        return []  # server tools and block types newer than this module

    def _block_delta(self, data: dict[str, Any], event_name: str) -> list[Chunk]:
        index = self._index(data, event_name)
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise self._protocol(event_name, f"'delta' is not an object: {delta!r}")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind == "thinking_delta":
            thinking = delta.get("thinking")
            return [ReasoningDelta(thinking)] if isinstance(thinking, str) and thinking else []
        if kind == "signature_delta":
            signature = delta.get("signature")
            if self._blocks.get(index) != "thinking" or not isinstance(signature, str):
                raise self._protocol(
                    event_name, f"signature_delta for block {index}, which is not a thinking block"
                )
            self._signatures[index].append(signature)
            return []
        if kind == "input_json_delta":
            if self._blocks.get(index) != "tool_use":
                raise self._protocol(
                    event_name, f"input_json_delta for block {index}, which is not a tool_use"
                )
            fragment = delta.get("partial_json")
            if not isinstance(fragment, str):
                raise self._protocol(event_name, f"partial_json is not a string: {fragment!r}")
            return [ToolCallChunk(index=index, arguments=fragment)] if fragment else []
        return []  # citations_delta, …

    def _usage(self, usage: dict[str, Any]) -> None:
        self._saw_usage = True
        # Cached prompt tokens are counted apart by the API; they are input all the same.
        fields = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        if any(isinstance(usage.get(field), int) for field in fields):
            self._input_tokens = sum(_int(usage.get(field)) for field in fields)
        if isinstance(usage.get("output_tokens"), int):
            self._output_tokens = _int(usage["output_tokens"])  # cumulative in the API

    def _index(self, data: dict[str, Any], event_name: str) -> int:
        index = data.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise self._protocol(event_name, f"'index' is not an integer: {index!r}")
        return index

    def _protocol(self, event_name: str, what: str) -> ModelError:
        return ModelError(
            "protocol",
            f"{PROVIDER} sent an unexpected SSE event {event_name!r} "
            f"from {self._request.url}: {what}",
        )


def to_anthropic_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation in the Messages format.

    Tool results become ``tool_result`` blocks of a user message; consecutive messages
    of one role are merged into one (the API wants roles to alternate), with tool
    results first, as the API requires after a ``tool_use``.  An assistant message with
    nothing in it (cut before its first token) is left out: the API rejects empty
    content.
    """
    wire: list[dict[str, Any]] = []
    for message in messages:
        role, blocks = _blocks(message)
        if not blocks:
            continue
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})
    for entry in wire:
        if entry["role"] == "user":
            # sorted() is stable: results keep their order, text keeps its order.
            entry["content"].sort(key=lambda block: block["type"] != "tool_result")
    return wire


def to_anthropic_tool(spec: ToolSpec) -> dict[str, Any]:
    """One :class:`ToolSpec` as a Messages tool definition."""
    return {
        "name": spec.name,
        "description": spec.description,
        "input_schema": dict(spec.parameters),
    }


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "user":
        return "user", [{"type": "text", "text": message.content}] if message.content else []
    if message.role == "tool":
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": message.call_id,
            "is_error": message.status not in (None, "ok"),
        }
        if message.content:
            result["content"] = message.content
        return "user", [result]
    blocks: list[dict[str, Any]] = []
    for r in message.reasoning:  # first, as they came; unsigned thinking can't go back
        if r.redacted is not None:
            blocks.append({"type": "redacted_thinking", "data": r.redacted})
        elif r.signature:
            blocks.append({"type": "thinking", "thinking": r.text, "signature": r.signature})
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.call_id,
                "name": call.name,
                # Unparseable arguments (a call cut by max_tokens) go back as {}: the
                # API insists on an object, and the tool result carries the error.
                "input": dict(call.arguments) if call.arguments is not None else {},
            }
        )
    return "assistant", blocks


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
