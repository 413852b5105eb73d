"""Events: every fact of a session, as immutable values with a JSON wire form.

Each event type of the design contract (DESIGN §2) is an ``@attrs.frozen(slots=True)``
class carrying ``type, session, run, step, seq, ts`` and its own fields.  Events are
validated on construction: a wrong type or an unknown choice raises
:class:`ProtocolError` naming the field and what was expected, so a bad event can never
enter a log.

``to_wire()`` / :func:`from_wire` round-trip through JSON with orjson.  Decoding never
raises a bare ``KeyError``/``TypeError``: every kind of bad input (not UTF-8, not JSON,
not an object, unknown ``type``, a missing, unknown or mistyped field) becomes a
:class:`ProtocolError` whose message says exactly what was wrong.

Events are immutable all the way down: the JSON values they carry (a call's arguments,
a tool's result, usage counts, a snapshot's state) are frozen on construction (see
:mod:`trio_agent._core.frozen`), because one event object is shared by the log, the
reducer's state and every subscriber.

An event made by a producer is *unstamped* (``seq == 0``); publishing it returns the
stamped copy with the session id, the next ``seq`` and the time.  The agent loop has
the bus build its events already stamped (``EventBus.publish_new``): one construction
per event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import attrs
import orjson

from ..errors import ProtocolError
from .event import (
    ANY_JSON,
    EVENT_TYPES,
    MODES,
    OPT_STR,
    STR,
    Event,
    describe,
    event_type,
    json_type,
)
from .frozen import JSON, FrozenDict, FrozenList, freeze

__all__ = [
    "DONE_STATUSES",
    "EVENT_TYPES",
    "TOOL_STATUSES",
    "Done",
    "Error",
    "Event",
    "FrozenDict",
    "FrozenList",
    "Interrupt",
    "Interrupted",
    "ModelFinished",
    "ProtocolError",
    "Reasoning",
    "Resume",
    "RunStarted",
    "StateSnapshot",
    "Thinking",
    "TokenStream",
    "ToolApproval",
    "ToolApprovalRequested",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolProgress",
    "ToolResult",
    "UserInput",
    "freeze",
    "from_dict",
    "from_wire",
    "loads",
]


@event_type("user_input", text=STR, command_id=OPT_STR)
@attrs.frozen(slots=True, kw_only=True)
class UserInput(Event):
    """A user message was accepted: it starts a run, or steers the running one.
    ``command_id``: the id the command carried, if any (so it is applied once)."""

    text: str
    command_id: str | None = None


@event_type("run_started")
@attrs.frozen(slots=True, kw_only=True)
class RunStarted(Event):
    """Run ``run`` began."""


@event_type("thinking", model=OPT_STR, provider=OPT_STR)
@attrs.frozen(slots=True, kw_only=True)
class Thinking(Event):
    """Step ``step`` began: the model is being called.  ``model`` and ``provider``
    name what is called, when the model says (``Model.model_name`` and
    ``provider_name``): a trace derived from the log names its model calls by them."""

    model: str | None = None
    provider: str | None = None


@event_type("token_stream", text=STR)
@attrs.frozen(slots=True, kw_only=True)
class TokenStream(Event):
    """Answer text from the model (one or more tokens)."""

    text: str


@event_type(
    "model_finished",
    finish_reason=STR,
    usage=((dict,), False, None),
    time_to_first_chunk=((float, int), True, None),
)
@attrs.frozen(slots=True, kw_only=True)
class ModelFinished(Event):
    """The step's model call ended normally (not in DESIGN §2: a trace derived from the
    log needs each call's end, its finish reason and its usage, and any process may be
    the one that derives it).  ``finish_reason`` as the provider gave it ("" when it
    gave none); ``usage`` counts this call's tokens (``{"input_tokens": n,
    "output_tokens": n}``, empty when the provider counted none);
    ``time_to_first_chunk``: seconds from the request to the stream's first chunk
    (None when none came).  Comes after the call's last ``tool_call``; a call cut short
    (an interrupt, a failure) has none."""

    finish_reason: str = ""
    usage: Mapping[str, int] = attrs.field(factory=dict)
    time_to_first_chunk: float | None = None

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        check_usage(self)


@event_type("reasoning", text=STR, signature=OPT_STR, redacted=OPT_STR)
@attrs.frozen(slots=True, kw_only=True)
class Reasoning(Event):
    """Reasoning text from the model, shown apart from the answer (not in DESIGN §2:
    providers stream it and users want to see it, but it must never mix into the
    answer text).

    With ``signature`` (and usually empty ``text``), the reasoning since the last such
    event is a block the provider sealed; with ``redacted``, an opaque block the
    provider shows nobody.  Both go back to the provider in the next request of the
    run (Anthropic refuses a tool-use turn whose thinking blocks are missing)."""

    text: str
    signature: str | None = None
    redacted: str | None = None


@event_type("tool_call_start", call_id=STR, name=STR)
@attrs.frozen(slots=True, kw_only=True)
class ToolCallStart(Event):
    """The model began tool call ``call_id``."""

    call_id: str
    name: str


@event_type("tool_call_delta", call_id=STR, delta=STR)
@attrs.frozen(slots=True, kw_only=True)
class ToolCallDelta(Event):
    """A fragment of the call's JSON arguments, as streamed."""

    call_id: str
    delta: str


@event_type("tool_call", call_id=STR, name=STR, arguments=((dict,), False, None))
@attrs.frozen(slots=True, kw_only=True)
class ToolCall(Event):
    """Arguments complete and parsed; execution begins."""

    call_id: str
    name: str
    arguments: Mapping[str, JSON]

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        self.check_json("arguments")
        self.freeze_field("arguments")


@event_type("tool_approval_requested", call_id=STR, name=STR, arguments=((dict,), False, None))
@attrs.frozen(slots=True, kw_only=True)
class ToolApprovalRequested(Event):
    """The call needs a person's approval before it runs (DESIGN §9): it waits for
    ``tool_approval``; the other calls of the step go on meanwhile."""

    call_id: str
    name: str
    arguments: Mapping[str, JSON]

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        self.check_json("arguments")
        self.freeze_field("arguments")


@event_type(
    "tool_approval",
    call_id=STR,
    approved=((bool,), False, None),
    reason=STR,
    command_id=OPT_STR,
)
@attrs.frozen(slots=True, kw_only=True)
class ToolApproval(Event):
    """The decision on a call that waited for approval: approved, it runs; denied, it
    ends ``denied`` with ``reason`` (which the model reads).  ``command_id``: the id of
    the ``approve`` command, if it carried one (a timeout's decision has none)."""

    call_id: str
    approved: bool
    reason: str = ""
    command_id: str | None = None


@event_type(
    "tool_progress",
    call_id=STR,
    progress=((float, int), False, None),
    total=((float, int), True, None),
    message=OPT_STR,
)
@attrs.frozen(slots=True, kw_only=True)
class ToolProgress(Event):
    """A running call reports how far it got (an MCP server's progress notification):
    ``progress`` so far, of ``total`` when the tool knows it, with an optional
    ``message``.  Changes no status; the newest one is kept on the call."""

    call_id: str
    progress: float
    total: float | None = None
    message: str | None = None

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        for name in ("progress", "total"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ProtocolError(
                    f"field {name!r} of 'tool_progress' event: expected a finite number, "
                    f"got {value!r}"
                )


TOOL_STATUSES: Final = frozenset({"ok", "error", "timeout", "cancelled", "denied"})


@event_type(
    "tool_result",
    call_id=STR,
    status=((str,), False, TOOL_STATUSES),
    result=ANY_JSON,
    error=OPT_STR,
)
@attrs.frozen(slots=True, kw_only=True)
class ToolResult(Event):
    """The call ended: ``result`` when ``status`` is ``ok``, else ``error`` says why
    (``denied``: a person said no, or nobody said yes in time)."""

    call_id: str
    status: str
    result: JSON = None
    error: str | None = None

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        if self.result is not None:
            self.check_json("result")
            self.freeze_field("result")


@event_type(
    "interrupt", mode=MODES, reason=STR, grace=((float, int), True, None), command_id=OPT_STR
)
@attrs.frozen(slots=True, kw_only=True)
class Interrupt(Event):
    """An interrupt request was accepted."""

    mode: str
    reason: str = ""
    grace: float | None = None
    command_id: str | None = None


@event_type("interrupted", mode=MODES, reason=STR)
@attrs.frozen(slots=True, kw_only=True)
class Interrupted(Event):
    """The run is paused after (soft) or at (hard) ``step``, waiting for ``resume``."""

    mode: str
    reason: str = ""


@event_type("resume", instruction=OPT_STR, command_id=OPT_STR)
@attrs.frozen(slots=True, kw_only=True)
class Resume(Event):
    """The run continues; the instruction, if any, is a new user message."""

    instruction: str | None = None
    command_id: str | None = None


@event_type("error", code=STR, message=STR, retryable=((bool,), False, None))
@attrs.frozen(slots=True, kw_only=True)
class Error(Event):
    """Something failed: the step is retried (``retryable``) or the run ends ``failed``.

    ``session == ""`` and ``seq == 0`` on an error sent to one client only (bad input):
    such errors are not part of any session's log.
    """

    code: str
    message: str
    retryable: bool = False


DONE_STATUSES: Final = frozenset({"completed", "cancelled", "failed"})


@event_type(
    "done",
    status=((str,), False, DONE_STATUSES),
    text=STR,
    usage=((dict,), False, None),
    command_id=OPT_STR,
    finish_reason=OPT_STR,
)
@attrs.frozen(slots=True, kw_only=True)
class Done(Event):
    """The run ended. ``text`` is the run's final answer; ``usage`` counts tokens
    (``{"input_tokens": n, "output_tokens": n}``); ``command_id``: the id of the
    ``cancel`` that ended it, if it carried one; ``finish_reason``: why the run's last
    model call ended, as the provider said it (``stop``, ``length`` — cut by
    ``max_tokens`` —, ``tool_calls``, ``end_turn``, ``max_tokens`` …), or ``None`` when
    that call did not end by itself (interrupted, cancelled, failed) or none was made."""

    status: str
    text: str = ""
    usage: Mapping[str, int] = attrs.field(factory=dict)
    command_id: str | None = None
    finish_reason: str | None = None

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        check_usage(self)


@event_type("state", state=((dict,), False, None))
@attrs.frozen(slots=True, kw_only=True)
class StateSnapshot(Event):
    """A snapshot of the reduced state (``State.to_dict()``), sent to a client when it
    attaches so it can render a half-finished message.  Not part of the log."""

    state: Mapping[str, JSON]

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        self.freeze_field("state")


def check_usage(event: ModelFinished | Done) -> None:
    """The event's ``usage`` is an object of int counts (frozen), or a ``ProtocolError``."""
    for key, value in event.usage.items():
        if type(value) is not int:
            raise ProtocolError(
                f"field 'usage' of {event.type!r} event: expected an object of int counts, "
                f"got {key!r}: {json_type(value)}"
            )
    event.freeze_field("usage")


def from_dict(obj: object) -> Event:
    """Build an event from its decoded wire form, or raise :class:`ProtocolError`."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {json_type(obj)}")
    kind = obj.get("type")
    if kind is None:
        raise ProtocolError("missing field 'type'")
    if not isinstance(kind, str):
        raise ProtocolError(f"field 'type': expected str, got {json_type(kind)}")
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown event type {kind!r}")
    fields = attrs.fields_dict(cls)
    kwargs: dict[str, Any] = {}
    for name, value in obj.items():
        if name == "type":
            continue
        if name not in fields:
            raise ProtocolError(f"unknown field {name!r} in {kind!r} event")
        kwargs[name] = value
    for name, field in fields.items():
        if name not in kwargs and field.default is attrs.NOTHING:
            check = next(c for c in cls.field_checks if c[0] == name)
            raise ProtocolError(
                f"missing field {name!r} in {kind!r} event (expected {describe(*check[1:])})"
            )
    return cls(**kwargs)


def from_wire(data: bytes | str) -> Event:
    """Decode one event from its JSON wire form, or raise :class:`ProtocolError`."""
    return from_dict(loads(data))


def loads(data: bytes | str) -> JSON:
    """Decode JSON text, turning every failure into a :class:`ProtocolError`."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"not UTF-8: invalid byte at position {exc.start}") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
