"""Events: construction validation and the JSON wire codec (DESIGN §2, issue 2)."""

from __future__ import annotations

import copy
import math
import pickle
import re
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trio_agent import events as ev
from trio_agent.events import EVENT_TYPES, ProtocolError, from_dict, from_wire

# ---- strategies -----------------------------------------------------------------------

HUGE = "🎉" * 250_000 + "x" * 1_000_000  # 2 MB of UTF-8

texts = st.one_of(
    st.text(),
    st.sampled_from(["", "é", "👩‍👩‍👧‍👦", '\u0000\n\t"\\', "\U0010ffff", "日本語テキスト"]),
)
# What JSON (and orjson) can carry: 64-bit integers, finite floats.
ints = st.integers(min_value=0, max_value=2**63 - 1)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=5)

command_ids = st.none() | st.text(min_size=1, max_size=64)

FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "user_input": {"text": texts, "command_id": command_ids},
    "run_started": {},
    "thinking": {"model": st.none() | texts, "provider": st.none() | texts},
    "token_stream": {"text": texts},
    "reasoning": {"text": texts},
    "model_finished": {
        "finish_reason": texts,
        "usage": st.fixed_dictionaries({}, optional={"input_tokens": ints, "output_tokens": ints}),
        "time_to_first_chunk": st.none() | st.floats(0, 1e6),
    },
    "tool_call_start": {"call_id": texts, "name": texts},
    "tool_call_delta": {"call_id": texts, "delta": texts},
    "tool_call": {"call_id": texts, "name": texts, "arguments": json_objects},
    "tool_approval_requested": {"call_id": texts, "name": texts, "arguments": json_objects},
    "tool_approval": {
        "call_id": texts,
        "approved": st.booleans(),
        "reason": texts,
        "command_id": command_ids,
    },
    "tool_progress": {
        "call_id": texts,
        "progress": st.floats(allow_nan=False, allow_infinity=False) | ints,
        "total": st.none() | st.floats(allow_nan=False, allow_infinity=False) | ints,
        "message": st.none() | texts,
    },
    "tool_result": {
        "call_id": texts,
        "status": st.sampled_from(["ok", "error", "timeout", "cancelled", "denied"]),
        "result": json_values,
        "error": st.none() | texts,
    },
    "interrupt": {
        "mode": st.sampled_from(["soft", "hard"]),
        "reason": texts,
        "grace": st.none() | st.floats(0, 1e6) | st.integers(0, 10**6),
        "command_id": command_ids,
    },
    "interrupted": {"mode": st.sampled_from(["soft", "hard"]), "reason": texts},
    "resume": {"instruction": st.none() | texts, "command_id": command_ids},
    "error": {"code": texts, "message": texts, "retryable": st.booleans()},
    "done": {
        "status": st.sampled_from(["completed", "cancelled", "failed"]),
        "text": texts,
        "usage": st.fixed_dictionaries({}, optional={"input_tokens": ints, "output_tokens": ints}),
        "command_id": command_ids,
        "finish_reason": st.none() | texts,
    },
    "state": {"state": json_objects},
}


def events_of(kind: str) -> st.SearchStrategy[ev.Event]:
    base = {
        "session": st.text(),
        "run": ints,
        "step": ints,
        "seq": ints,
        "ts": st.floats(allow_nan=False, allow_infinity=False) | ints,
    }
    return st.builds(EVENT_TYPES[kind], **base, **FIELDS[kind])


any_event = st.sampled_from(sorted(FIELDS)).flatmap(events_of)


# ---- the set of events ------------------------------------------------------------------


def test_every_design_event_type_is_registered() -> None:
    assert set(EVENT_TYPES) == set(FIELDS)
    for kind, cls in EVENT_TYPES.items():
        assert cls.type == kind
        assert attrs.has(cls)


# ---- round trip --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FIELDS))
@given(data=st.data())
def test_round_trip(kind: str, data: st.DataObject) -> None:
    event = data.draw(events_of(kind))
    wire = event.to_wire()
    assert isinstance(wire, bytes)
    decoded = orjson.loads(wire)
    assert next(iter(decoded)) == "type"  # type first
    assert decoded["type"] == kind
    assert decoded == event.to_dict()
    for back in (from_wire(wire), from_wire(wire.decode()), from_wire(bytearray(wire))):
        assert type(back) is type(event)
        assert back == event
        assert back.to_wire() == wire


@given(event=any_event)
@example(event=ev.TokenStream(text=""))
@example(event=ev.TokenStream(text=HUGE, seq=2**63 - 1))
@example(event=ev.ToolResult(call_id="c", status="ok", result={"a": [{"b": {"c": [1, 2.5]}}]}))
def test_round_trip_through_dict(event: ev.Event) -> None:
    assert from_dict(event.to_dict()) == event
    assert from_dict(orjson.loads(event.to_wire())) == event


MINIMAL: dict[str, dict[str, Any]] = {
    "tool_call": {"arguments": {"k": "v"}},
    "tool_approval_requested": {"arguments": {"k": "v"}},
    "tool_approval": {"approved": False},
    "tool_progress": {"progress": 0.5},
    "tool_result": {"status": "error"},
    "interrupt": {"mode": "hard"},
    "interrupted": {"mode": "soft"},
    "done": {"status": "completed"},
    "state": {"state": {}},
}


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_round_trip_huge_texts(kind: str) -> None:
    cls = EVENT_TYPES[kind]
    strings = [
        "session",
        *(
            n
            for n in FIELDS[kind]
            if n not in MINIMAL.get(kind, {})
            and (n not in ("result", "grace", "retryable", "usage", "time_to_first_chunk", "total"))
        ),
    ]
    base = {n: "" for n in strings} | MINIMAL.get(kind, {})
    for name in strings:
        event = cls(**{**base, name: HUGE})
        back = from_wire(event.to_wire())
        assert back == event
        assert getattr(back, name) == HUGE


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_each_type_is_built_as_attrs_would_build_it(kind: str) -> None:
    """The generated ``__init__`` (``compile_init``) keeps attrs' contract: keyword-only,
    the declared defaults, required fields required, the check run, the result frozen,
    ``attrs.evolve`` through it."""
    cls = EVENT_TYPES[kind]
    fields = attrs.fields(cls)
    required = [f.name for f in fields if f.default is attrs.NOTHING]
    given = {n: v for n, v in MINIMAL.get(kind, {}).items()} | {
        n: "x" for n in required if n not in MINIMAL.get(kind, {})
    }
    event = cls(**given)
    for f in fields:
        default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default  # type: ignore[arg-type]
        assert getattr(event, f.name) == given.get(f.name, default)
    with pytest.raises(TypeError):
        cls("s", **given)
    for name in required:
        with pytest.raises(TypeError, match=name):
            cls(**{k: v for k, v in given.items() if k != name})
    with pytest.raises(ProtocolError, match="field 'run'"):
        cls(**given, run="1")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.seq = 3  # type: ignore[misc]
    later = attrs.evolve(event, seq=7, ts=2.5)
    assert (later.seq, later.ts, type(later)) == (7, 2.5, cls)


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_each_type_is_built_the_same_by_position_stamped_and_as_a_dict(kind: str) -> None:
    """``cls.new`` (every field by position: how the bus builds what it stamps) makes
    the event the keyword constructor makes and refuses what it refuses; ``stamped``
    makes what ``attrs.evolve`` makes; the generated ``to_dict`` is the wire form in
    field order, ``type`` first."""
    cls = EVENT_TYPES[kind]
    required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
    given = {n: v for n, v in MINIMAL.get(kind, {}).items()} | {
        n: "x" for n in required if n not in MINIMAL.get(kind, {})
    }
    event = cls(**given, session="s", run=2, step=3, seq=4, ts=5.0)
    values = [getattr(event, n) for n in cls.field_names]
    built = cls.new(*values)
    assert built == event and type(built) is cls
    named = list(zip(cls.field_names, values, strict=True))
    with pytest.raises(ProtocolError, match="field 'run'"):
        cls.new(*[("1" if n == "run" else v) for n, v in named])
    with pytest.raises(ProtocolError, match="field 'ts'"):
        cls.new(*[(math.inf if n == "ts" else v) for n, v in named])
    with pytest.raises(TypeError):
        cls.new(*values[:-1])
    assert event.stamped("t", 9, 1.5) == attrs.evolve(event, session="t", seq=9, ts=1.5)
    wire = event.to_dict()
    assert list(wire) == ["type", *cls.field_names]
    assert wire == {"type": kind} | {n: getattr(event, n) for n in cls.field_names}


def test_an_event_type_with_a_field_the_generated_init_cannot_build_is_refused() -> None:
    from trio_agent._core.event import Event, event_type

    with pytest.raises(TypeError, match=r"^event field Odd\.n: an event field is a keyword"):

        @event_type("odd_for_the_test")
        @attrs.frozen(slots=True, kw_only=True)
        class Odd(Event):
            n: int = attrs.field(default=0, converter=int)

    assert "odd_for_the_test" not in EVENT_TYPES


def test_round_trip_keeps_exact_text() -> None:
    text = 'a\u0301 👩🏽‍🚀 \u2028 \\u0041 "quoted"'
    back = from_wire(ev.TokenStream(text=text).to_wire())
    assert isinstance(back, ev.TokenStream)
    assert back.text == text


def test_defaults_fill_optional_fields() -> None:
    assert from_wire(b'{"type":"resume"}') == ev.Resume()
    assert from_wire(b'{"type":"done","status":"completed"}') == ev.Done(status="completed")
    assert from_wire(b'{"type":"thinking","run":2,"step":3}') == ev.Thinking(run=2, step=3)
    result = from_wire(b'{"type":"tool_result","call_id":"c1","status":"timeout"}')
    assert result == ev.ToolResult(call_id="c1", status="timeout", result=None, error=None)


# ---- bad input ---------------------------------------------------------------------------


def _orjson_message(data: bytes) -> str:
    with pytest.raises(orjson.JSONDecodeError) as info:
        orjson.loads(data)
    return f"not valid JSON: {info.value}"


NOT_JSON = [b"", b"{", b"nope", b'{"type":"thinking",}', b"[1,", b"{'type': 'thinking'}"]


@pytest.mark.parametrize("data", NOT_JSON)
def test_not_json(data: bytes) -> None:
    message = _orjson_message(data)
    assert message.startswith("not valid JSON: ") and len(message) > len("not valid JSON: ")
    with pytest.raises(ProtocolError, match=f"^{re.escape(message)}$"):
        from_wire(data)


def test_not_json_str_input() -> None:
    with pytest.raises(
        ProtocolError,
        match=r"^not valid JSON: invalid literal, expected 'null': line 1 column 1 \(char 0\)$",
    ):
        from_wire("nope")


@pytest.mark.parametrize(
    ("data", "position"),
    [(b"\xff{}", 0), (b'{"type":"user_input","text":"caf\xe9"}', 32), (b"{}\x80", 2)],
)
def test_not_utf8(data: bytes, position: int) -> None:
    with pytest.raises(ProtocolError, match=rf"^not UTF-8: invalid byte at position {position}$"):
        from_wire(data)


TH = "field {!r} of 'thinking' event: expected "
BAD_INPUT: list[tuple[str, str]] = [
    # not an object
    ("[]", r"expected a JSON object, got array"),
    ('"thinking"', r"expected a JSON object, got str"),
    ("1", r"expected a JSON object, got int"),
    ("1.5", r"expected a JSON object, got number"),
    ("null", r"expected a JSON object, got null"),
    ("true", r"expected a JSON object, got bool"),
    # the type
    ("{}", r"missing field 'type'"),
    ('{"text": "hi"}', r"missing field 'type'"),
    ('{"type": 1}', r"field 'type': expected str, got int"),
    ('{"type": ["thinking"]}', r"field 'type': expected str, got array"),
    ('{"type": "fly"}', r"unknown event type 'fly'"),
    ('{"type": ""}', r"unknown event type ''"),
    ('{"type": "Thinking"}', r"unknown event type 'Thinking'"),
    # missing fields
    ('{"type": "user_input"}', r"missing field 'text' in 'user_input' event \(expected str\)"),
    (
        '{"type": "tool_call", "call_id": "c1", "name": "calc"}',
        r"missing field 'arguments' in 'tool_call' event \(expected object\)",
    ),
    (
        '{"type": "tool_result", "call_id": "c1"}',
        r"missing field 'status' in 'tool_result' event "
        r"\(expected 'cancelled' or 'denied' or 'error' or 'ok' or 'timeout'\)",
    ),
    (
        '{"type": "interrupt"}',
        r"missing field 'mode' in 'interrupt' event \(expected 'hard' or 'soft'\)",
    ),
    ('{"type": "state"}', r"missing field 'state' in 'state' event \(expected object\)"),
    # mistyped fields
    (
        '{"type": "user_input", "text": 5}',
        r"field 'text' of 'user_input' event: expected str, got int",
    ),
    (
        '{"type": "user_input", "text": null}',
        r"field 'text' of 'user_input' event: expected str, got null",
    ),
    ('{"type": "thinking", "run": true}', TH.format("run") + "int, got bool"),
    ('{"type": "thinking", "step": false}', TH.format("step") + "int, got bool"),
    ('{"type": "thinking", "seq": 1.0}', TH.format("seq") + "int, got number"),
    ('{"type": "thinking", "run": "1"}', TH.format("run") + "int, got str"),
    (
        '{"type": "thinking", "run": 18446744073709551616}',
        r"field 'run' of 'thinking' event: expected int, got number",
    ),
    ('{"type": "thinking", "ts": "now"}', TH.format("ts") + "number, got str"),
    ('{"type": "thinking", "ts": true}', TH.format("ts") + "number, got bool"),
    ('{"type": "thinking", "session": 7}', TH.format("session") + "str, got int"),
    (
        '{"type": "error", "code": "x", "message": "y", "retryable": 1}',
        r"field 'retryable' of 'error' event: expected bool, got int",
    ),
    (
        '{"type": "tool_call", "call_id": "c1", "name": "calc", "arguments": [1]}',
        r"field 'arguments' of 'tool_call' event: expected object, got array",
    ),
    (
        '{"type": "tool_call", "call_id": "c1", "name": "calc", "arguments": "{}"}',
        r"field 'arguments' of 'tool_call' event: expected object, got str",
    ),
    (
        '{"type": "resume", "instruction": 5}',
        r"field 'instruction' of 'resume' event: expected str or null, got int",
    ),
    (
        '{"type": "tool_result", "call_id": "c1", "status": "error", "error": {}}',
        r"field 'error' of 'tool_result' event: expected str or null, got object",
    ),
    (
        '{"type": "interrupt", "mode": "soft", "grace": "5"}',
        r"field 'grace' of 'interrupt' event: expected number or null, got str",
    ),
    (
        '{"type": "interrupt", "mode": "soft", "grace": false}',
        r"field 'grace' of 'interrupt' event: expected number or null, got bool",
    ),
    (
        '{"type": "done", "status": "completed", "usage": []}',
        r"field 'usage' of 'done' event: expected object, got array",
    ),
    # unknown fields
    (
        '{"type": "user_input", "text": "x", "colour": "red"}',
        r"unknown field 'colour' in 'user_input' event",
    ),
    ('{"type": "thinking", "_checks": []}', r"unknown field '_checks' in 'thinking' event"),
    ('{"type": "run_started", "text": "x"}', r"unknown field 'text' in 'run_started' event"),
    # bad choices
    (
        '{"type": "interrupt", "mode": "medium"}',
        r"field 'mode' of 'interrupt' event: expected 'hard' or 'soft', got 'medium'",
    ),
    (
        '{"type": "interrupt", "mode": 1}',
        r"field 'mode' of 'interrupt' event: expected 'hard' or 'soft', got int",
    ),
    (
        '{"type": "interrupted", "mode": "HARD"}',
        r"field 'mode' of 'interrupted' event: expected 'hard' or 'soft', got 'HARD'",
    ),
    (
        '{"type": "done", "status": "maybe"}',
        r"field 'status' of 'done' event: expected 'cancelled' or 'completed' or 'failed', "
        r"got 'maybe'",
    ),
    (
        '{"type": "tool_result", "call_id": "c1", "status": "fine"}',
        r"field 'status' of 'tool_result' event: "
        r"expected 'cancelled' or 'denied' or 'error' or 'ok' or 'timeout', got 'fine'",
    ),
    (
        '{"type": "tool_result", "call_id": "c1", "status": null}',
        r"field 'status' of 'tool_result' event: "
        r"expected 'cancelled' or 'denied' or 'error' or 'ok' or 'timeout', got null",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_INPUT)
def test_bad_input(text: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=f"^{message}$"):
        from_wire(text.encode())
    with pytest.raises(ProtocolError, match=f"^{message}$"):
        from_wire(text)
    obj = orjson.loads(text)
    if isinstance(obj, dict):
        with pytest.raises(ProtocolError, match=f"^{message}$"):
            from_dict(obj)


def test_protocol_error_is_a_value_error_without_chained_noise() -> None:
    with pytest.raises(ProtocolError) as info:
        from_wire(b"{")
    assert isinstance(info.value, ValueError)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(data: bytes) -> None:
    try:
        event = from_wire(data)
    except ProtocolError:
        return
    assert isinstance(event, ev.Event)


@given(
    kind=st.sampled_from([*sorted(FIELDS), "fly"]),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "session",
                "run",
                "step",
                "seq",
                "ts",
                "text",
                "call_id",
                "name",
                "delta",
                "arguments",
                "status",
                "result",
                "error",
                "mode",
                "reason",
                "grace",
                "instruction",
                "code",
                "message",
                "retryable",
                "usage",
                "state",
                "extra",
            ]
        ),
        json_values,
    ),
)
def test_arbitrary_objects_never_raise_anything_but_protocol_error(
    kind: str, fields: dict[str, Any]
) -> None:
    try:
        event = from_dict({"type": kind, **fields})
    except ProtocolError:
        return
    assert type(event) is EVENT_TYPES[kind]
    assert from_wire(event.to_wire()) == event


# ---- construction ------------------------------------------------------------------------


T = "field {!r} of {!r} event: expected "
CONSTRUCTION: list[tuple[type[ev.Event], dict[str, Any], str]] = [
    (ev.UserInput, {"text": 5}, T.format("text", "user_input") + "str, got int"),
    (ev.UserInput, {"text": b"x"}, T.format("text", "user_input") + "str, got bytes"),
    (ev.TokenStream, {"text": "x", "run": True}, T.format("run", "token_stream") + "int, got bool"),
    (
        ev.TokenStream,
        {"text": "x", "seq": 1.0},
        T.format("seq", "token_stream") + "int, got number",
    ),
    (ev.Thinking, {"ts": "t"}, T.format("ts", "thinking") + "number, got str"),
    (ev.Interrupt, {"mode": "now"}, T.format("mode", "interrupt") + "'hard' or 'soft', got 'now'"),
    (
        ev.Interrupted,
        {"mode": "soft", "reason": None},
        T.format("reason", "interrupted") + "str, got null",
    ),
    (
        ev.ToolCall,
        {"call_id": "c", "name": "n", "arguments": [("a", 1)]},
        T.format("arguments", "tool_call") + "object, got array",
    ),
    (
        ev.ToolResult,
        {"call_id": "c", "status": "OK"},
        T.format("status", "tool_result")
        + "'cancelled' or 'denied' or 'error' or 'ok' or 'timeout', got 'OK'",
    ),
    (
        ev.Error,
        {"code": "c", "message": "m", "retryable": 0},
        T.format("retryable", "error") + "bool, got int",
    ),
    (
        ev.Done,
        {"status": "completed", "usage": None},
        T.format("usage", "done") + "object, got null",
    ),
    (ev.StateSnapshot, {"state": "{}"}, T.format("state", "state") + "object, got str"),
    (
        ev.ToolProgress,
        {"call_id": "c", "progress": "half"},
        T.format("progress", "tool_progress") + "number, got str",
    ),
    (
        ev.ToolProgress,
        {"call_id": "c", "progress": 1, "total": True},
        T.format("total", "tool_progress") + "number or null, got bool",
    ),
    (
        ev.ToolProgress,
        {"call_id": "c", "progress": math.nan},
        "field 'progress' of 'tool_progress' event: expected a finite number, got nan",
    ),
    (
        ev.ToolProgress,
        {"call_id": "c", "progress": 1, "total": math.inf},
        "field 'total' of 'tool_progress' event: expected a finite number, got inf",
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), CONSTRUCTION)
def test_construction_validates(cls: type[ev.Event], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=f"^{re.escape(message)}$"):
        cls(**kwargs)


def test_events_are_frozen_values() -> None:
    event = ev.TokenStream(text="hi", run=1, step=2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.text = "bye"  # type: ignore[misc]
    assert event == ev.TokenStream(text="hi", run=1, step=2)
    assert event != ev.TokenStream(text="hi", run=1, step=3)
    assert hash(event) == hash(ev.TokenStream(text="hi", run=1, step=2))
    assert (event.session, event.seq, event.ts) == ("", 0, 0.0)  # unstamped
    assert not hasattr(event, "__dict__")  # slots


def test_to_dict_carries_every_field_type_first() -> None:
    event = ev.ToolResult(
        session="s1", run=1, step=2, seq=9, ts=1.5, call_id="c1", status="error", error="bad"
    )
    assert event.to_dict() == {
        "type": "tool_result",
        "session": "s1",
        "run": 1,
        "step": 2,
        "seq": 9,
        "ts": 1.5,
        "call_id": "c1",
        "status": "error",
        "result": None,
        "error": "bad",
    }
    assert next(iter(event.to_dict())) == "type"


# ---- bugs found while writing these tests (see the report) --------------------------------


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf])
def test_non_finite_ts_is_rejected(ts: float) -> None:
    # orjson writes NaN/inf as null, so such an event would encode to a wire form that
    # from_wire rejects: the round trip breaks.  It must be refused on construction.
    with pytest.raises(
        ProtocolError, match=r"^field 'ts' of 'thinking' event: expected a finite number, got "
    ):
        ev.Thinking(ts=ts)


def test_usage_counts_must_be_ints() -> None:
    # A done event whose usage holds a non-int count decodes today and then makes the
    # reducer raise a bare ValueError: bad input must stop at the codec.
    with pytest.raises(
        ProtocolError,
        match=r"^field 'usage' of 'done' event: expected an object of int counts, "
        r"got 'input_tokens': str$",
    ):
        from_wire(b'{"type":"done","status":"completed","usage":{"input_tokens":"many"}}')


# ---- immutable all the way down ------------------------------------------------------


def test_json_values_in_events_are_frozen_at_every_depth() -> None:
    arguments = {"paths": ["/a", "/b"], "options": {"depth": [1, 2]}}
    call = ev.ToolCall(call_id="c1", name="ls", arguments=arguments)
    arguments["paths"].append("/c")  # the producer's own dict stays its own
    assert call.arguments == {"paths": ["/a", "/b"], "options": {"depth": [1, 2]}}
    assert isinstance(call.arguments, dict) and isinstance(call.arguments["paths"], list)
    for change in (
        lambda: call.arguments.__setitem__("x", 1),  # type: ignore[index]
        lambda: call.arguments.pop("paths"),  # type: ignore[attr-defined]
        lambda: call.arguments.update(x=1),  # type: ignore[attr-defined]
        lambda: call.arguments["paths"].append("/d"),
        lambda: call.arguments["options"]["depth"].sort(),
        lambda: call.arguments["options"]["depth"].__setitem__(0, 9),
    ):
        with pytest.raises(TypeError, match=r"^can't change a Frozen(Dict|List): an event's"):
            change()
    assert call.arguments == {"paths": ["/a", "/b"], "options": {"depth": [1, 2]}}

    result = ev.ToolResult(call_id="c1", status="ok", result=[{"n": 1}, (2, 3)])
    with pytest.raises(TypeError):
        result.result[0]["n"] = 2
    assert result.result == [{"n": 1}, [2, 3]]  # tuples are JSON arrays
    done = ev.Done(status="completed", usage={"input_tokens": 1})
    with pytest.raises(TypeError):
        done.usage["input_tokens"] = 5  # type: ignore[index]

    # Frozen values go through the wire, copies and stamping as they are.
    again = ev.from_wire(call.to_wire())
    assert again == call and isinstance(again.arguments["paths"], ev.FrozenList)  # type: ignore[attr-defined]
    stamped = attrs.evolve(call, session="s", seq=4)
    assert stamped.arguments is call.arguments
    assert copy.deepcopy(call.arguments) == call.arguments
    assert pickle.loads(pickle.dumps(call.arguments)) == call.arguments
