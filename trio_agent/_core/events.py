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
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Self, TypeAlias

import attrs
import orjson

from ..errors import ProtocolError
from .frozen import JSON, FrozenDict, FrozenList, freeze

__all__ = [
    "EVENT_TYPES",
    "Done",
    "Error",
    "Event",
    "FrozenDict",
    "FrozenList",
    "Interrupt",
    "Interrupted",
    "ProtocolError",
    "Reasoning",
    "Resume",
    "RunStarted",
    "StateSnapshot",
    "Thinking",
    "TokenStream",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolResult",
    "UserInput",
    "freeze",
    "from_dict",
    "from_wire",
]


_TYPE_NAMES: Final = {
    str: "str",
    int: "int",
    float: "number",
    bool: "bool",
    dict: "object",
    list: "array",
}

# A field check: (name, accepted types, may be None, allowed values or None)
_Check: TypeAlias = tuple[str, tuple[type, ...], bool, frozenset[str] | None]


def _describe(types: tuple[type, ...], optional: bool, choices: frozenset[str] | None) -> str:
    if choices is not None:
        text = " or ".join(repr(c) for c in sorted(choices))
    elif types == ():
        text = "any JSON value"
    else:
        text = " or ".join(
            _TYPE_NAMES.get(t, t.__name__) for t in types if t is not int or float not in types
        )
    return text + (" or null" if optional else "")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


@attrs.frozen(slots=True, kw_only=True)
class Event:
    """Fields every event carries.

    ``session``, ``seq`` and ``ts`` are stamped by ``Session.publish``; ``run`` counts
    from 1 in each session and ``step`` from 1 in each run (0 where not in one).
    """

    type: ClassVar[str] = ""
    _checks: ClassVar[tuple[_Check, ...]] = ()
    _names: ClassVar[tuple[str, ...]] = ()

    session: str = ""
    run: int = 0
    step: int = 0
    seq: int = 0
    ts: float = 0.0

    def __attrs_post_init__(self) -> None:
        # One generated check per class (see ``_compile_check``), not one validator
        # per field: events are built on the token hot path.  Only when it fails does
        # the generic loop run, to say which field is wrong and why.
        if not self._fast_check():
            self._check()

    def _fast_check(self) -> bool:  # replaced per class by ``_compile_check``
        return False

    def _check(self) -> None:
        """Raise :class:`ProtocolError` naming the first field that is wrong."""
        for name, types, optional, choices in self._checks:
            value = getattr(self, name)
            if value is None:
                if optional:
                    continue
            elif (
                types == ()
                or (isinstance(value, types) and (type(value) is not bool or bool in types))
            ) and (choices is None or value in choices):
                continue
            raise ProtocolError(
                f"field {name!r} of {self.type!r} event: expected "
                f"{_describe(types, optional, choices)}, got "
                + (
                    repr(value)
                    if choices is not None and isinstance(value, str)
                    else _json_type(value)
                )
            )
        ts = self.ts
        if not math.isfinite(ts):  # JSON has no NaN or infinity
            raise ProtocolError(
                f"field 'ts' of {self.type!r} event: expected a finite number, got {ts!r}"
            )

    def _check_json(self, name: str) -> None:
        """Field ``name`` must be a JSON value (orjson encodes it): caught here, not
        when the event is first sent or folded."""
        try:
            orjson.dumps(getattr(self, name))
        except orjson.JSONEncodeError as exc:
            raise ProtocolError(
                f"field {name!r} of {self.type!r} event: expected a JSON value, {exc}"
            ) from None

    def _freeze(self, name: str) -> None:
        value = getattr(self, name)
        frozen = freeze(value)
        if frozen is not value:
            object.__setattr__(self, name, frozen)

    def stamped(self, session: str, seq: int, ts: float) -> Self:
        """A copy of this event with the session, ``seq`` and time set: what publishing
        an unstamped event does (``EventBus.publish``)."""
        return attrs.evolve(self, session=session, seq=seq, ts=ts)

    def to_dict(self) -> dict[str, JSON]:
        """The wire form as a plain dict (``type`` first)."""
        out: dict[str, JSON] = {"type": self.type}
        for name in self._names:
            out[name] = getattr(self, name)
        return out

    def to_wire(self) -> bytes:
        """The wire form: one JSON object, UTF-8."""
        return orjson.dumps(self.to_dict())


_BASE_CHECKS: Final[tuple[_Check, ...]] = (
    ("session", (str,), False, None),
    ("run", (int,), False, None),
    ("step", (int,), False, None),
    ("seq", (int,), False, None),
    ("ts", (float, int), False, None),
)

EVENT_TYPES: dict[str, type[Event]] = {}


def _compile_check(
    checks: tuple[_Check, ...],
) -> tuple[Callable[[Event], bool], Callable[[Event], None]]:
    """A function that says whether an event passes ``checks`` (and has a finite
    ``ts``), as one boolean expression over exact types; and the same as an
    ``__attrs_post_init__`` (one call per event built instead of two, for the event
    types with no checks of their own).

    Generated, as attrs generates ``__init__``: a loop over the checks costs about three
    times as much, and this runs once per event built.  Exact types are stricter than
    the ``isinstance`` of :meth:`Event._check`; a value that fails here (a subclass, say)
    is judged there.
    """
    env: dict[str, object] = {}
    terms = []
    for i, (name, types, optional, choices) in enumerate(checks):
        if not types:
            continue
        alternatives = []
        for j, kind in enumerate(types):
            env[f"_t{i}_{j}"] = kind
            alternatives.append(f"type(self.{name}) is _t{i}_{j}")
        term = " or ".join(alternatives)
        if optional:
            term = f"self.{name} is None or {term}"
        if choices is not None:
            env[f"_c{i}"] = choices
            term = f"({term}) and self.{name} in _c{i}"
        terms.append(f"({term})")
    terms.append("self.ts - self.ts == 0")  # false for NaN and infinities
    condition = " and ".join(terms)
    source = (
        f"def fast_check(self):\n    return {condition}\n"
        f"def post_init(self):\n    if not ({condition}):\n        self._check()\n"
    )
    exec(compile(source, "<trio_agent.events check>", "exec"), env)
    return env["fast_check"], env["post_init"]  # type: ignore[return-value]


def _event(type_name: str, **checks: tuple[tuple[type, ...], bool, frozenset[str] | None]) -> Any:
    """Register an event class under its wire ``type`` with its field checks."""

    def register(cls: type[Event]) -> type[Event]:
        cls.type = type_name
        cls._checks = _BASE_CHECKS + tuple((n, *spec) for n, spec in checks.items())
        cls._names = tuple(a.name for a in attrs.fields(cls))
        fast_check, post_init = _compile_check(cls._checks)
        cls._fast_check = fast_check  # type: ignore[method-assign,assignment]
        if cls.__attrs_post_init__ is Event.__attrs_post_init__:
            cls.__attrs_post_init__ = post_init  # type: ignore[method-assign,assignment]
        EVENT_TYPES[type_name] = cls
        return cls

    return register


_STR: Final = ((str,), False, None)
_OPT_STR: Final = ((str,), True, None)
_ANY: Final = ((), True, None)
_MODES: Final = ((str,), False, frozenset({"soft", "hard"}))


@_event("user_input", text=_STR)
@attrs.frozen(slots=True, kw_only=True)
class UserInput(Event):
    """A user message was accepted: it starts a run, or steers the running one."""

    text: str


@_event("run_started")
@attrs.frozen(slots=True, kw_only=True)
class RunStarted(Event):
    """Run ``run`` began."""


@_event("thinking")
@attrs.frozen(slots=True, kw_only=True)
class Thinking(Event):
    """Step ``step`` began: the model is being called."""


@_event("token_stream", text=_STR)
@attrs.frozen(slots=True, kw_only=True)
class TokenStream(Event):
    """Answer text from the model (one or more tokens)."""

    text: str


@_event("reasoning", text=_STR, signature=_OPT_STR, redacted=_OPT_STR)
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


@_event("tool_call_start", call_id=_STR, name=_STR)
@attrs.frozen(slots=True, kw_only=True)
class ToolCallStart(Event):
    """The model began tool call ``call_id``."""

    call_id: str
    name: str


@_event("tool_call_delta", call_id=_STR, delta=_STR)
@attrs.frozen(slots=True, kw_only=True)
class ToolCallDelta(Event):
    """A fragment of the call's JSON arguments, as streamed."""

    call_id: str
    delta: str


@_event("tool_call", call_id=_STR, name=_STR, arguments=((dict,), False, None))
@attrs.frozen(slots=True, kw_only=True)
class ToolCall(Event):
    """Arguments complete and parsed; execution begins."""

    call_id: str
    name: str
    arguments: Mapping[str, JSON]

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        self._check_json("arguments")
        self._freeze("arguments")


TOOL_STATUSES: Final = frozenset({"ok", "error", "timeout", "cancelled"})


@_event(
    "tool_result",
    call_id=_STR,
    status=((str,), False, TOOL_STATUSES),
    result=_ANY,
    error=_OPT_STR,
)
@attrs.frozen(slots=True, kw_only=True)
class ToolResult(Event):
    """The call ended: ``result`` when ``status`` is ``ok``, else ``error`` says why."""

    call_id: str
    status: str
    result: JSON = None
    error: str | None = None

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        if self.result is not None:
            self._check_json("result")
            self._freeze("result")


@_event("interrupt", mode=_MODES, reason=_STR, grace=((float, int), True, None))
@attrs.frozen(slots=True, kw_only=True)
class Interrupt(Event):
    """An interrupt request was accepted."""

    mode: str
    reason: str = ""
    grace: float | None = None


@_event("interrupted", mode=_MODES, reason=_STR)
@attrs.frozen(slots=True, kw_only=True)
class Interrupted(Event):
    """The run is paused after (soft) or at (hard) ``step``, waiting for ``resume``."""

    mode: str
    reason: str = ""


@_event("resume", instruction=_OPT_STR)
@attrs.frozen(slots=True, kw_only=True)
class Resume(Event):
    """The run continues; the instruction, if any, is a new user message."""

    instruction: str | None = None


@_event("error", code=_STR, message=_STR, retryable=((bool,), False, None))
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


@_event(
    "done",
    status=((str,), False, DONE_STATUSES),
    text=_STR,
    usage=((dict,), False, None),
)
@attrs.frozen(slots=True, kw_only=True)
class Done(Event):
    """The run ended. ``text`` is the run's final answer; ``usage`` counts tokens
    (``{"input_tokens": n, "output_tokens": n}``)."""

    status: str
    text: str = ""
    usage: Mapping[str, int] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        for key, value in self.usage.items():
            if type(value) is not int:
                raise ProtocolError(
                    f"field 'usage' of 'done' event: expected an object of int counts, "
                    f"got {key!r}: {_json_type(value)}"
                )
        self._freeze("usage")


@_event("state", state=((dict,), False, None))
@attrs.frozen(slots=True, kw_only=True)
class StateSnapshot(Event):
    """A snapshot of the reduced state (``State.to_dict()``), sent to a client when it
    attaches so it can render a half-finished message.  Not part of the log."""

    state: Mapping[str, JSON]

    def __attrs_post_init__(self) -> None:
        Event.__attrs_post_init__(self)
        self._freeze("state")


def from_dict(obj: object) -> Event:
    """Build an event from its decoded wire form, or raise :class:`ProtocolError`."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {_json_type(obj)}")
    kind = obj.get("type")
    if kind is None:
        raise ProtocolError("missing field 'type'")
    if not isinstance(kind, str):
        raise ProtocolError(f"field 'type': expected str, got {_json_type(kind)}")
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
            check = next(c for c in cls._checks if c[0] == name)
            raise ProtocolError(
                f"missing field {name!r} in {kind!r} event (expected {_describe(*check[1:])})"
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
