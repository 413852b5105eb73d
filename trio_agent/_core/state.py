"""The reduced state of a session: immutable values the reducer folds the log into.

A :class:`State` (and each :class:`ToolCallState` in it) is a named tuple, so that a
transition on the token path costs one tuple copy.  ``to_dict`` is the JSON form a
``state`` snapshot carries.  Sans-I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from . import events as ev
from .model import Message, ReasoningBlock, Usage
from .text import EMPTY as _EMPTY
from .text import Text

__all__ = [
    "COMMAND_ID_WINDOW",
    "OPEN_CALL_STATUSES",
    "STATUSES",
    "State",
    "ToolCallState",
    "initial_state",
]

STATUSES: Final = ("idle", "thinking", "acting", "interrupted", "done", "error")

OPEN_CALL_STATUSES: Final = frozenset({"streaming", "running", "awaiting_approval"})
"""The statuses of a tool call that has no ``tool_result`` yet."""

COMMAND_ID_WINDOW: Final = 1024
"""Command ids a session remembers (with the seq of the event that applied each), the
newest kept: a client that retries a command after a reconnect does so within seconds
and a few commands, so a thousand covers every retry a person's clicks can make, while
a state snapshot stays small.  Rebuilt by replaying the log, so a session recovered by
another process remembers them too (within what its log still holds)."""


class ToolCallState(NamedTuple):
    """A tool call of the current step.

    ``status`` is ``streaming`` (arguments arriving), ``running`` (executing),
    ``awaiting_approval`` (held until a person decides, DESIGN §9), or the
    ``tool_result`` status.  ``approval`` is ``None`` for a call that needs none, else
    ``requested``, ``approved`` or ``denied``.  ``progress`` is the newest
    ``tool_progress`` of a running call, ``(progress, total, message)``, else ``None``.
    """

    call_id: str
    name: str
    status: str = "streaming"
    arguments_text: Text = _EMPTY
    arguments: Mapping[str, Any] | None = None
    result: Any = None
    error: str | None = None
    approval: str | None = None
    progress: tuple[float, float | None, str | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "name": self.name,
            "status": self.status,
            "arguments_text": str(self.arguments_text),
            "arguments": self.arguments,
            "result": self.result,
            "error": self.error,
            "approval": self.approval,
            "progress": None
            if self.progress is None
            else dict(zip(("progress", "total", "message"), self.progress, strict=True)),
        }


class State(NamedTuple):
    """The reduced state of one session: an immutable value (a named tuple, so that a
    transition on the token path costs one tuple copy).

    - ``status``: one of :data:`STATUSES`;
    - ``run``/``step``: the current (or last) run and step; ``seq``: the last event;
    - ``messages``: the conversation as the model sees it (user, assistant, tool);
    - ``text``/``reasoning``/``tool_calls``: the step in progress (the half-finished
      assistant message a client renders on attach); ``reasoning_blocks``: the step's
      sealed reasoning (see ``events.Reasoning``), ``reasoning_mark`` the length of
      ``reasoning`` they cover;
    - ``pending_inputs``: user messages accepted but not yet given to the model;
    - ``interrupting``: the mode of an accepted interrupt not yet taken effect;
    - ``usage``: tokens of the last finished run; ``error``: the last error event;
    - ``command_ids``: ``(id, seq)`` of the newest commands applied that carried an id
      (at most :data:`COMMAND_ID_WINDOW`), oldest first.
    """

    session: str = ""
    status: str = "idle"
    run: int = 0
    step: int = 0
    seq: int = 0
    messages: tuple[Message, ...] = ()
    text: Text = _EMPTY
    reasoning: Text = _EMPTY
    reasoning_blocks: tuple[ReasoningBlock, ...] = ()
    reasoning_mark: int = 0
    tool_calls: tuple[ToolCallState, ...] = ()
    step_open: bool = False
    pending_inputs: tuple[str, ...] = ()
    interrupting: str | None = None
    usage: Usage = Usage()
    error: ev.Error | None = None
    done_text: str = ""
    command_ids: tuple[tuple[str, int], ...] = ()

    @property
    def running(self) -> bool:
        """A run is going (thinking or acting)."""
        return self.status in ("thinking", "acting")

    def call(self, call_id: str) -> ToolCallState | None:
        for call in self.tool_calls:
            if call.call_id == call_id:
                return call
        return None

    @property
    def pending_approvals(self) -> tuple[ToolCallState, ...]:
        """The step's calls waiting for a person's decision."""
        return tuple(c for c in self.tool_calls if c.status == "awaiting_approval")

    def applied(self, command_id: str) -> int | None:
        """The seq of the event that applied the command ``command_id``, if the session
        remembers it (see :data:`COMMAND_ID_WINDOW`)."""
        for cid, seq in reversed(self.command_ids):
            if cid == command_id:
                return seq
        return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form sent in a ``state`` snapshot."""
        return {
            "session": self.session,
            "status": self.status,
            "run": self.run,
            "step": self.step,
            "seq": self.seq,
            "messages": [_message_dict(m) for m in self.messages],
            "text": str(self.text),
            "reasoning": str(self.reasoning),
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "pending_approvals": [c.to_dict() for c in self.pending_approvals],
            "pending_inputs": list(self.pending_inputs),
            "interrupting": self.interrupting,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "error": None if self.error is None else self.error.to_dict(),
        }


def _message_dict(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls
        ]
    if m.call_id is not None:
        out["call_id"] = m.call_id
        out["name"] = m.name
        out["status"] = m.status
    if m.cut:
        out["cut"] = True
    return out


def initial_state(session: str = "") -> State:
    """The state before the first event of ``session``."""
    return State(session=session)
