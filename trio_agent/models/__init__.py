"""Models: the protocol every model speaks, and the models that speak it.

- The protocol and its values: :class:`Model` (``stream(messages, tools)`` yields
  chunks; ``aclose()`` releases the connection pool), :class:`Message`,
  :class:`ToolSpec`, :class:`ReasoningBlock`, the chunks (:class:`TextDelta`,
  :class:`ReasoningDelta`, :class:`ReasoningEnd`, :class:`ToolCallChunk`,
  :class:`ToolCallEnd`, :class:`Retrying`, :class:`Finish`),
  :class:`Usage` and :class:`ModelError`.
- :class:`ScriptedModel`: offline and deterministic, the default (DESIGN §5).
- :class:`OpenAIChatModel`: any OpenAI-compatible Chat Completions server (OpenAI,
  vLLM, llama.cpp, Ollama, gateways); ``$OPENAI_BASE_URL`` (including ``/v1``) and
  ``$OPENAI_API_KEY``.
- :class:`AnthropicModel`: the Anthropic Messages API; ``$ANTHROPIC_BASE_URL`` (the host
  root) and ``$ANTHROPIC_API_KEY``.
- :func:`from_spec`: a model from a command-line SPEC (``scripted``, ``scripted:FILE``,
  ``openai:MODEL``, ``anthropic:MODEL``).
- :func:`make_client` and :class:`RetryPolicy`: the shared HTTP connection pool and
  how failed requests are retried.
"""

from __future__ import annotations

import httpx

from .._core.model import (
    Chunk,
    Finish,
    Message,
    Model,
    ModelError,
    ReasoningBlock,
    ReasoningDelta,
    ReasoningEnd,
    Retrying,
    TextDelta,
    ToolCallChunk,
    ToolCallEnd,
    ToolCallRecord,
    ToolSpec,
    Usage,
)
from .anthropic import AnthropicModel
from .http import make_client
from .openai import OpenAIChatModel
from .retry import RetryPolicy
from .scripted import ScriptedModel

__all__ = [
    "AnthropicModel",
    "Chunk",
    "Finish",
    "Message",
    "Model",
    "ModelError",
    "OpenAIChatModel",
    "ReasoningBlock",
    "ReasoningDelta",
    "ReasoningEnd",
    "RetryPolicy",
    "Retrying",
    "ScriptedModel",
    "TextDelta",
    "ToolCallChunk",
    "ToolCallEnd",
    "ToolCallRecord",
    "ToolSpec",
    "Usage",
    "from_spec",
    "make_client",
]

#: The forms a model SPEC takes, quoted by the error for a bad one.
SPEC_FORMS = "'scripted', 'scripted:FILE', 'openai:MODEL' or 'anthropic:MODEL'"


def from_spec(
    spec: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    client: httpx.AsyncClient | None = None,
    max_tokens: int | None = None,
) -> Model:
    """The model a SPEC names.

    ``scripted`` is the built-in demo script, ``scripted:FILE`` a script file;
    ``openai:MODEL`` and ``anthropic:MODEL`` the providers (everything after the first
    colon is the model name, so ``openai:llama3:8b`` works).  ``base_url``, ``api_key``,
    ``client`` and ``max_tokens`` (the cap on each answer; ``None``: the provider's
    default, or the Anthropic model's) go to a provider; ``base_url``, ``api_key`` and
    ``max_tokens`` mean nothing to a scripted model and are refused for one.  Raises
    ``ValueError`` naming the spec.
    """
    kind, colon, rest = spec.partition(":")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    if kind == "scripted":
        if base_url is not None or api_key is not None or max_tokens is not None:
            raise ValueError(
                f"model spec {spec!r} is a scripted model: it takes no base URL, API key "
                "or max_tokens"
            )
        if not colon:
            return ScriptedModel.demo()
        if not rest:
            raise ValueError(f"model spec {spec!r} names no script file; expected {SPEC_FORMS}")
        return ScriptedModel.from_file(rest)
    if kind in ("openai", "anthropic"):
        if not rest:
            raise ValueError(f"model spec {spec!r} names no model; expected {SPEC_FORMS}")
        if kind == "openai":
            return OpenAIChatModel(
                rest, base_url=base_url, api_key=api_key, client=client, max_tokens=max_tokens
            )
        if max_tokens is None:
            return AnthropicModel(rest, base_url=base_url, api_key=api_key, client=client)
        return AnthropicModel(
            rest, base_url=base_url, api_key=api_key, client=client, max_tokens=max_tokens
        )
    raise ValueError(f"unknown model spec {spec!r}; expected {SPEC_FORMS}")
