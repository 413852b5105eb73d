"""What an MCP tool call's result means to the model: :func:`outcome_of`.

- ``isError`` → status ``error``, with the content's text (what the server says went
  wrong, for the model to read and correct);
- structured content, when the server gives it → the result is that JSON value;
- otherwise the content blocks, as text: text blocks and embedded text resources as
  they are, joined by newlines; what has no text (images, audio, binary resources,
  resource links) as a short note of what it was (``[image: image/png, 1204 bytes]``),
  since a tool result goes to the model as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mcp_types as types

from ..execute import ToolOutcome

__all__ = ["describe_block", "outcome_of"]


def outcome_of(result: types.CallToolResult, server: str, tool: str) -> ToolOutcome:
    """The outcome of a call of ``tool`` of ``server`` that ended with ``result``."""
    text = _text(result.content)
    if result.is_error:
        return ToolOutcome.failed(text or f"MCP tool {tool!r} of server {server!r} failed")
    if result.structured_content is not None:
        return ToolOutcome("ok", result.structured_content)
    return ToolOutcome("ok", text)


def _text(blocks: Sequence[Any]) -> str:
    return "\n".join(describe_block(b) for b in blocks)


def describe_block(block: Any) -> str:
    """One content block as text (see the module)."""
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return resource.text
        mime = resource.mime_type or "application/octet-stream"
        return f"[resource {resource.uri}: {mime}, {_size(resource.blob)} bytes]"
    if isinstance(block, types.ImageContent | types.AudioContent):
        return f"[{block.type}: {block.mime_type}, {_size(block.data)} bytes]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.uri}]"
    return f"[{getattr(block, 'type', type(block).__name__)}]"


def _size(data: str) -> int:
    """The size of base64 ``data`` once decoded (worked out, not decoded)."""
    return len(data.strip().rstrip("=")) * 3 // 4
