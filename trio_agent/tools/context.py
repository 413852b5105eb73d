"""``ToolCallContext``: what a running tool call may say while it runs.

A tool made with ``Tool(takes_context=True)`` is awaited as ``fn(arguments, context)``:
its arguments as one dict, and the context of its call, through which it reports how
far it got (``progress``: a ``tool_progress`` event) or says something the user should
see meanwhile (``notice``: an ``error`` event with ``retryable`` true, e.g. "restarting
the server").  The runtime makes one per call (``trio_agent._runtime.calls``); tools that
talk to another process with a protocol of its own (MCP servers) are such tools.
:class:`QuietContext` is one that says nothing, for a call run outside a session.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

__all__ = ["QuietContext", "ToolCallContext"]


class ToolCallContext(Protocol):
    """The context of one tool call (see the module)."""

    @property
    def call_id(self) -> str:
        """The call's id (``tool_call.call_id``)."""
        ...

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Say how far the call got: a ``tool_progress`` event of this call.  Returns once
        it is published (a caller that reports often should keep only the newest while
        it waits: each one says how far the call is now)."""
        ...

    async def notice(self, code: str, message: str) -> None:
        """Say something the user should see while the call goes on: an ``error`` event
        with ``code``, ``message`` and ``retryable`` true (the call is not over)."""
        ...


@attrs.frozen(slots=True)
class QuietContext:
    """A :class:`ToolCallContext` that publishes nothing (a call run outside a
    session, e.g. ``execute_tool`` called directly)."""

    call_id: str = ""

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        await trio.lowlevel.checkpoint()

    async def notice(self, code: str, message: str) -> None:
        await trio.lowlevel.checkpoint()
