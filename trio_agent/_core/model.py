"""What every model speaks: the conversation going in, the chunks coming out.

A model is anything with ``stream(messages, tools)`` returning an async iterator of
chunks.  The agent loop never looks inside a provider: it feeds chunks to the sans-I/O
tool-call assembler (``trio_agent._core.assembler``) and publishes what that produces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from ..errors import ModelError

__all__ = [
    "Chunk",
    "Finish",
    "Message",
    "Model",
    "ModelError",
    "ReasoningBlock",
    "ReasoningDelta",
    "ReasoningEnd",
    "Retrying",
    "TextDelta",
    "ToolCallChunk",
    "ToolCallEnd",
    "ToolCallRecord",
    "ToolSpec",
    "Usage",
    "model_identity",
]

Role = Literal["user", "assistant", "tool"]


@attrs.frozen(slots=True)
class Usage:
    """Tokens counted by the provider for one model call (or summed over a run)."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@attrs.frozen(slots=True)
class ToolCallRecord:
    """A tool call the assistant made, as it goes back to the model on the next step.

    ``arguments`` is the parsed JSON object, or ``None`` when the streamed text was not
    valid JSON; ``raw_arguments`` is the text exactly as streamed.
    """

    call_id: str
    name: str
    arguments: Mapping[str, Any] | None
    raw_arguments: str


@attrs.frozen(slots=True)
class ReasoningBlock:
    """A block of reasoning as the provider sealed it: ``text`` with the provider's
    ``signature`` (Anthropic's ``thinking`` block), or an opaque ``redacted`` payload
    (``redacted_thinking``).  Providers that sign their reasoning want it back,
    unchanged, in the next request of a tool-use loop."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


@attrs.frozen(slots=True)
class Message:
    """One entry of the conversation.

    - ``user``: ``content`` is the user's text.
    - ``assistant``: ``content`` is the text the model streamed, ``tool_calls`` the calls
      it made; ``cut`` is true when a hard interrupt or a broken stream ended it early.
    - ``tool``: ``content`` is the result (or error) text for ``call_id``/``name``;
      ``status`` is the tool_result status (``ok``, ``error``, ``timeout``, ``cancelled``).
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCallRecord, ...] = ()
    reasoning: tuple[ReasoningBlock, ...] = ()
    """The assistant's sealed reasoning blocks, to be sent back as the provider wants
    them (Anthropic's thinking blocks with their signatures); empty for the others."""
    call_id: str | None = None
    name: str | None = None
    status: str | None = None
    cut: bool = False


@attrs.frozen(slots=True)
class ToolSpec:
    """A tool as a model sees it: name, description and JSON schema of the arguments."""

    name: str
    description: str
    parameters: Mapping[str, Any]


# ---- chunks: what ``Model.stream`` yields -------------------------------------------


@attrs.frozen(slots=True)
class TextDelta:
    """Answer text (one or more tokens)."""

    text: str


@attrs.frozen(slots=True)
class ReasoningDelta:
    """Reasoning/thinking text: surfaced to the user, never mixed into the answer."""

    text: str


@attrs.frozen(slots=True)
class ReasoningEnd:
    """The reasoning streamed since the last ``ReasoningEnd`` is a sealed block:
    ``signature`` covers it (Anthropic's ``signature_delta``), or the block is
    ``redacted`` and this opaque payload is all there is of it."""

    signature: str | None = None
    redacted: str | None = None


@attrs.frozen(slots=True)
class ToolCallChunk:
    """A piece of a streamed tool call.

    Providers key parallel calls by ``index`` (OpenAI) or by content-block index
    (Anthropic); ``call_id`` and ``name`` usually come only in a call's first chunk.
    ``arguments`` is a fragment of the JSON text, possibly empty, possibly split in the
    middle of a key, a value or a multi-byte character (already decoded to ``str``).
    A chunk with ``index=None`` carries a whole call (id, name and all its arguments).
    """

    index: int | None
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen(slots=True)
class ToolCallEnd:
    """The provider says the call at ``index`` is complete (Anthropic's
    ``content_block_stop``).  Providers that have no such signal (OpenAI) send none: their
    open calls complete when the stream finishes."""

    index: int


@attrs.frozen(slots=True)
class Retrying:
    """The provider hit a retryable failure and will try again after ``delay`` seconds."""

    code: str
    message: str
    attempt: int
    delay: float


@attrs.frozen(slots=True)
class Finish:
    """The model call ended normally; ``reason`` as the provider gave it."""

    reason: str = "stop"
    usage: Usage | None = None


Chunk = TextDelta | ReasoningDelta | ReasoningEnd | ToolCallChunk | ToolCallEnd | Retrying | Finish


@runtime_checkable
class Model(Protocol):
    """The model protocol.

    ``stream`` returns an async iterator (usually an async generator) of chunks for one
    model call.  The agent loop closes it (``aclose``) when the step's cancel scope is
    cancelled, so a provider must release its HTTP response in ``finally``.  Failures
    are raised as :class:`ModelError`.  ``aclose()`` on the model itself releases
    shared resources (a connection pool) and is called when the runtime exits.
    """

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


def model_identity(model: object) -> tuple[str | None, str | None]:
    """``(provider_name, model_name)`` of ``model``: its optional attributes of those
    names (see :class:`Model`), None where it has none (or one that is not a string)."""
    provider = getattr(model, "provider_name", None)
    name = getattr(model, "model_name", None)
    return (
        provider if isinstance(provider, str) else None,
        name if isinstance(name, str) else None,
    )
