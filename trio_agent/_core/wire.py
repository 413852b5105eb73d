"""The WebSocket wire protocol, sans-I/O: client commands in, event frames out.

Nothing here awaits.  :func:`parse_command` turns one client frame into a
:class:`Command` or raises :class:`CommandError` (whose ``code`` is the ``error``
event's code and whose message says exactly what was wrong); :func:`encode_frame`
turns a batch of events into one server frame (a JSON array), merging consecutive
text events.  The transports do the I/O; the protocol is written down in
``docs/protocol.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import orjson

from ..errors import CommandError
from . import events as ev
from .commands import MAX_COMMAND_ID, OPS, Approve, Cancel, Command, Interrupt, Resume, UserInput

__all__ = [
    "OPS",
    "ack",
    "client_error",
    "command_to_wire",
    "encode_frame",
    "merge_events",
    "parse_command",
]


_STR: Final = "str"
_OPT_STR: Final = "str or null"
_OPT_NUMBER: Final = "a non-negative number or null"
_MODE: Final = "'hard' or 'soft'"
_BOOL: Final = "bool"
_ID: Final = f"a string of 1 to {MAX_COMMAND_ID} characters"
_ANY_ID: Final = {"id": (_ID, False)}  # every op may carry one (DESIGN §6)

# op -> {field: (what it must be, required)}
_OPS: Final[Mapping[str, Mapping[str, tuple[str, bool]]]] = {
    "user_input": {"text": (_STR, True), **_ANY_ID},
    "interrupt": {
        "mode": (_MODE, False),
        "reason": (_STR, False),
        "grace": (_OPT_NUMBER, False),
        **_ANY_ID,
    },
    "resume": {"instruction": (_OPT_STR, False), **_ANY_ID},
    "cancel": {**_ANY_ID},
    "approve": {
        "call_id": (_STR, True),
        "approved": (_BOOL, True),
        "reason": (_STR, False),
        **_ANY_ID,
    },
}

assert tuple(_OPS) == OPS


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__  # pragma: no cover - orjson yields only the above


def _valid(kind: str, value: object) -> bool:
    if kind == _STR:
        return isinstance(value, str)
    if kind == _OPT_STR:
        return value is None or isinstance(value, str)
    if kind == _MODE:
        return value in ("soft", "hard")
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _ID:
        return isinstance(value, str) and 1 <= len(value) <= MAX_COMMAND_ID
    if kind == _OPT_NUMBER:
        if value is None:
            return True
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        )
    raise AssertionError(kind)  # pragma: no cover


def parse_command(data: str | bytes) -> Command:
    """One client frame as a command, or :class:`CommandError`.

    Codes: ``binary_frame`` (a binary frame), ``bad_json`` (not UTF-8 or not JSON),
    ``bad_command`` (not an object, no ``op``, an unknown, missing or mistyped field),
    ``unknown_op``.
    """
    if isinstance(data, bytes | bytearray):
        raise CommandError(
            "binary_frame", "binary frames are not accepted: send commands as JSON text frames"
        )
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CommandError("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError("bad_command", f"a command is a JSON object, got {_json_type(obj)}")
    op = obj.get("op")
    if op is None:
        raise CommandError("bad_command", "missing field 'op'")
    if not isinstance(op, str):
        raise CommandError("bad_command", f"field 'op': expected str, got {_json_type(op)}")
    spec = _OPS.get(op)
    if spec is None:
        raise CommandError("unknown_op", f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    for name, value in obj.items():
        if name == "op":
            continue
        field = spec.get(name)
        if field is None:
            raise CommandError("bad_command", f"unknown field {name!r} in {op!r} op")
        if not _valid(field[0], value):
            got = repr(value) if field[0] == _MODE and isinstance(value, str) else _json_type(value)
            raise CommandError(
                "bad_command", f"field {name!r} of {op!r} op: expected {field[0]}, got {got}"
            )
    for name, (kind, required) in spec.items():
        if required and name not in obj:
            raise CommandError(
                "bad_command", f"missing field {name!r} in {op!r} op (expected {kind})"
            )
    cid = obj.get("id")
    if op == "user_input":
        return UserInput(obj["text"], id=cid)
    if op == "interrupt":
        mode = obj.get("mode", "soft")
        grace = obj.get("grace")
        if grace is not None and mode != "soft":
            raise CommandError(
                "bad_command", "field 'grace' of 'interrupt' op: only a soft interrupt has a grace"
            )
        return Interrupt(
            mode, obj.get("reason", ""), None if grace is None else float(grace), id=cid
        )
    if op == "resume":
        return Resume(obj.get("instruction"), id=cid)
    if op == "approve":
        return Approve(obj["call_id"], obj["approved"], obj.get("reason", ""), id=cid)
    return Cancel(id=cid)


def command_to_wire(command: Command) -> dict[str, Any]:
    """The wire form of ``command`` (``parse_command`` of its JSON gives it back): how a
    command travels to another process."""
    out: dict[str, Any]
    if isinstance(command, UserInput):
        out = {"op": "user_input", "text": command.text}
    elif isinstance(command, Interrupt):
        out = {"op": "interrupt", "mode": command.mode, "reason": command.reason}
        if command.grace is not None:
            out["grace"] = command.grace
    elif isinstance(command, Resume):
        out = {"op": "resume", "instruction": command.instruction}
    elif isinstance(command, Approve):
        out = {
            "op": "approve",
            "call_id": command.call_id,
            "approved": command.approved,
            "reason": command.reason,
        }
    else:
        assert isinstance(command, Cancel)
        out = {"op": "cancel"}
    if command.id is not None:
        out["id"] = command.id
    return out


# ---- server frames ---------------------------------------------------------------------

_MERGEABLE: Final = frozenset({"token_stream", "reasoning", "tool_call_delta"})


def merge_events(events: Iterable[ev.Event]) -> tuple[list[dict[str, Any]], int]:
    """The wire dicts of ``events``, with consecutive text events merged.

    Merged: runs of ``token_stream`` (or of ``reasoning``) of the same run and step,
    and runs of ``tool_call_delta`` of the same call.  The merged event's text is the
    exact concatenation; a run of ``tool_progress`` of the same call collapses to its
    newest (each one says how far the call is now, so the newest says it all).  A
    merged event carries the ``seq`` and ``ts`` of the *last* event it
    covers, so a client that reconnects with ``?after=`` that seq misses nothing and
    gets nothing twice.  Returns the dicts and how many events were folded into
    others (``len(events) - len(dicts)``).
    """
    out: list[dict[str, Any]] = []
    parts: list[str] = []  # the texts of the run being merged into out[-1]
    key: tuple[Any, ...] | None = None
    merged = 0
    for e in events:
        kind = e.type
        if kind in _MERGEABLE and (kind != "reasoning" or not _seals(e)):
            if kind == "tool_call_delta":
                assert isinstance(e, ev.ToolCallDelta)
                k: tuple[Any, ...] = (kind, e.run, e.step, e.call_id)
                text = e.delta
            else:
                assert isinstance(e, ev.TokenStream | ev.Reasoning)
                k = (kind, e.run, e.step)
                text = e.text
            if k == key:
                parts.append(text)
                last = out[-1]
                last["seq"] = e.seq
                last["ts"] = e.ts
                merged += 1
                continue
            _close_run(out, parts, key)
            key = k
            parts = [text]
        elif kind == "tool_progress":
            assert isinstance(e, ev.ToolProgress)
            k = (kind, e.run, e.step, e.call_id)
            if k == key:  # only the newest matters: it says how far the call is now
                out[-1] = e.to_dict()
                merged += 1
                continue
            _close_run(out, parts, key)
            key = k
            parts = []
            out.append(e.to_dict())
            continue
        else:
            _close_run(out, parts, key)
            key = None
            parts = []
        out.append(e.to_dict())
    _close_run(out, parts, key)
    return out, merged


def _seals(e: ev.Event) -> bool:
    """A reasoning event that seals a block goes alone: its fields must reach the client."""
    return type(e) is ev.Reasoning and (e.signature is not None or e.redacted is not None)


def _close_run(out: list[dict[str, Any]], parts: list[str], key: tuple[Any, ...] | None) -> None:
    if key is not None and len(parts) > 1:
        out[-1]["delta" if key[0] == "tool_call_delta" else "text"] = "".join(parts)


def encode_frame(events: Sequence[ev.Event]) -> tuple[str, int]:
    """One server frame (a JSON array, as text) for ``events`` in ``seq`` order, and
    how many events were merged away (see :func:`merge_events`)."""
    dicts, merged = merge_events(events)
    return orjson.dumps(dicts).decode(), merged


def ack(command_id: str, seq: int) -> dict[str, Any]:
    """What a client gets for a command whose id the session had applied already (it
    is not applied again): ``{"type": "ack", "command_id": …, "seq": …}``, ``seq`` the
    event that applied it (DESIGN §6)."""
    return {"type": "ack", "command_id": command_id, "seq": seq}


def client_error(code: str, message: str) -> ev.Error:
    """An ``error`` event for one client only: not in any session's log, so its
    ``session`` is ``""`` and its ``seq`` 0."""
    return ev.Error(code=code, message=message, retryable=False, ts=time.time())
