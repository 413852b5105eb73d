"""The reducer: ``reduce(state, event) -> state``, pure and sans-I/O.

The session's state is a fold of its log: ``publish`` applies ``reduce`` to every event
before fan-out, and replaying the log from :func:`~trio_agent._core.state.initial_state`
rebuilds the live state exactly (crash recovery and reconnect rely on it).  The agent
loop reads the model's input (``state.messages``) from here, so a steering message that
the reducer has put in ``pending_inputs`` is in the next step's input by construction.

The rule is one table, h11 style, and it is data: :data:`TRANSITIONS` says, for each
status, which events are legal in it and the status each one leads to.  The handlers
(:data:`HANDLERS`, one per event type) only compute the other fields.  An event with no
entry raises :class:`~trio_agent.errors.ReduceError` naming the event and the state;
the state is a frozen value, so it is unchanged.

Text grows by one ``token_stream`` at a time: :class:`~trio_agent._core.text.Text`
appends in amortized O(1), so a run of n tokens costs O(n), not O(n²).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import orjson

from ..errors import ReduceError
from . import events as ev
from .model import Message, ReasoningBlock, ToolCallRecord, Usage
from .state import COMMAND_ID_WINDOW, OPEN_CALL_STATUSES, STATUSES, State, ToolCallState
from .text import EMPTY

__all__ = ["HANDLERS", "TRANSITIONS", "fold_tokens", "reduce", "replay", "token_legal"]

_T = TypeVar("_T", bound=tuple[Any, ...])
_CallEvent = (
    ev.ToolCallDelta
    | ev.ToolCall
    | ev.ToolApprovalRequested
    | ev.ToolApproval
    | ev.ToolProgress
    | ev.ToolResult
)
_tuple_new = tuple.__new__

SAME: Final = "same"
"""In :data:`TRANSITIONS`: the event leaves the status as it is."""

_Row = Mapping[str, str | Mapping[str, str]]

_RUNNING: Final[_Row] = {
    "thinking": "thinking",  # a new step: the model is called again
    "token_stream": SAME,
    "reasoning": SAME,
    "model_finished": SAME,  # the step's model call ended; its tool calls may run on
    "tool_call_start": SAME,
    "tool_call_delta": SAME,
    "tool_call": "acting",  # a tool runs
    "tool_approval_requested": SAME,  # ... or waits for a person first
    "tool_approval": SAME,
    "tool_progress": SAME,  # a running call says how far it got
    "tool_result": SAME,
    "interrupt": SAME,  # accepted; it takes effect at ``interrupted``
    "interrupted": "interrupted",
    "user_input": SAME,  # steering: pending until the next step
    "error": SAME,
    "done": {"completed": "done", "cancelled": "done", "failed": "error"},
}
_ENDED: Final[_Row] = {"user_input": SAME, "run_started": "thinking", "error": SAME}

TRANSITIONS: Final[Mapping[str, _Row]] = {
    "idle": _ENDED,
    "thinking": _RUNNING,
    "acting": _RUNNING,
    "interrupted": {
        "user_input": SAME,  # held for the resume it comes with
        "resume": "thinking",
        "error": SAME,
        "done": {"completed": "done", "cancelled": "done", "failed": "error"},
    },
    "done": _ENDED,
    "error": _ENDED,
}
"""``{status: {event type: next status}}``.  The next status is a status, ``SAME``, or
(for ``done``) a mapping from the event's ``status`` field to the next status."""

assert set(TRANSITIONS) == set(STATUSES)


# ---- helpers ------------------------------------------------------------------------


def _evolve(value: _T, **changes: Any) -> _T:
    """``value`` with some fields replaced: ``NamedTuple._replace``, but in one list copy
    (this runs once per event, on the publish path)."""
    fields = list(value)
    index = _INDEX[type(value)]
    for name, new in changes.items():
        fields[index[name]] = new
    return _tuple_new(type(value), fields)


_INDEX: Final[dict[type, dict[str, int]]] = {
    cls: {name: i for i, name in enumerate(cls._fields)} for cls in (State, ToolCallState)
}
_SEQ: Final = _INDEX[State]["seq"]
_TEXT: Final = _INDEX[State]["text"]
_STATUS: Final = _INDEX[State]["status"]
_CALLS: Final = _INDEX[State]["tool_calls"]

_STEP_CLOSED: Final = {
    "text": EMPTY,
    "reasoning": EMPTY,
    "reasoning_blocks": (),
    "reasoning_mark": 0,
    "tool_calls": (),
    "step_open": False,
    "interrupting": None,
}
"""The fields of a step in progress, once the step is over."""


def _close_step(s: State, *, cut: bool) -> tuple[Message, ...]:
    """The conversation with the open step's assistant and tool messages appended."""
    if not s.step_open:
        return s.messages
    calls = tuple(
        ToolCallRecord(c.call_id, c.name, c.arguments, str(c.arguments_text)) for c in s.tool_calls
    )
    text = str(s.text)
    added: list[Message] = []
    if text or calls or cut or s.reasoning_blocks:
        added.append(Message("assistant", text, calls, s.reasoning_blocks, cut=cut))
    for c in s.tool_calls:
        content = _tool_content(c)
        added.append(Message("tool", content, call_id=c.call_id, name=c.name, status=c.status))
    return s.messages + tuple(added)


def _tool_content(c: ToolCallState) -> str:
    if c.status == "ok":
        return orjson.dumps(c.result).decode() if not isinstance(c.result, str) else c.result
    return c.error or c.status


def _require_step(s: State, e: ev.Event) -> None:
    if not s.step_open:
        raise ReduceError(f"{e.type} before the step's thinking event in run {s.run}")


def _open_call(s: State, e: _CallEvent, expected: str) -> tuple[int, ToolCallState]:
    """Where the step's tool call ``e.call_id`` is, and the call; it must be
    ``expected``."""
    call_id = e.call_id
    for i, c in enumerate(s.tool_calls):
        if c.call_id == call_id:
            if c.status != expected:
                raise ReduceError(f"{e.type} for tool call {call_id!r}, which is {c.status}")
            return i, c
    raise ReduceError(f"{e.type} for unknown tool call {call_id!r}")


def _put_call(s: State, seq: int, i: int, call: ToolCallState) -> State:
    """``s`` at ``seq`` with ``call`` in place of the step's ``i``-th: one copy of the
    state, as this runs for every streamed piece of a call's arguments."""
    calls = s.tool_calls
    fields = list(s)
    fields[_SEQ] = seq
    fields[_CALLS] = (*calls[:i], call, *calls[i + 1 :])
    return _tuple_new(State, fields)


def _with_call(s: State, e: _CallEvent, expected: str, /, **changes: Any) -> State:
    """``s`` after ``e``: its ``seq``, and the step's tool call ``e.call_id`` (which must
    be ``expected``) with ``changes``."""
    i, c = _open_call(s, e, expected)
    return _put_call(s, e.seq, i, _evolve(c, **changes))


def _open_calls_error(s: State, event_type: str) -> None:
    open_calls = [c.call_id for c in s.tool_calls if c.status in OPEN_CALL_STATUSES]
    if open_calls:
        raise ReduceError(f"{event_type} while tool calls {open_calls!r} have no tool_result")


def _remember(s: State, command_id: str | None, seq: int) -> tuple[tuple[str, int], ...]:
    """The window of applied command ids with ``command_id`` (if any) applied at ``seq``."""
    if command_id is None:
        return s.command_ids
    ids = (*s.command_ids, (command_id, seq))
    return ids[-COMMAND_ID_WINDOW:] if len(ids) > COMMAND_ID_WINDOW else ids


# ---- handlers: every field but the status -------------------------------------------


def _user_input(s: State, e: ev.UserInput) -> State:
    return _evolve(
        s,
        seq=e.seq,
        pending_inputs=(*s.pending_inputs, e.text),
        command_ids=_remember(s, e.command_id, e.seq),
    )


def _run_started(s: State, e: ev.RunStarted) -> State:
    if e.run != s.run + 1:
        raise ReduceError(f"run_started for run {e.run}, expected run {s.run + 1}")
    return _evolve(
        s,
        seq=e.seq,
        run=e.run,
        step=0,
        error=None,
        interrupting=None,
        usage=Usage(),
        done_text="",
    )


def _thinking(s: State, e: ev.Thinking) -> State:
    if e.step != s.step + 1:
        raise ReduceError(f"thinking for step {e.step}, expected step {s.step + 1}")
    messages = _close_step(s, cut=False) + tuple(Message("user", t) for t in s.pending_inputs)
    return _evolve(
        s,
        **{**_STEP_CLOSED, "step_open": True, "interrupting": s.interrupting},
        seq=e.seq,
        step=e.step,
        messages=messages,
        pending_inputs=(),
    )


def _token(s: State, e: ev.TokenStream) -> State:
    # The hot path (one call per token): ``_evolve`` without the keyword plumbing.
    if not s.step_open:
        _require_step(s, e)
    fields = list(s)
    fields[_SEQ] = e.seq
    fields[_TEXT] = s.text.append(e.text)
    return _tuple_new(State, fields)


def _reasoning(s: State, e: ev.Reasoning) -> State:
    _require_step(s, e)
    reasoning = s.reasoning.append(e.text) if e.text else s.reasoning
    if e.signature is None and e.redacted is None:
        return _evolve(s, seq=e.seq, reasoning=reasoning)
    if e.redacted is not None:
        block = ReasoningBlock(redacted=e.redacted)
    else:
        block = ReasoningBlock(str(reasoning)[s.reasoning_mark :], signature=e.signature)
    return _evolve(
        s,
        seq=e.seq,
        reasoning=reasoning,
        reasoning_blocks=(*s.reasoning_blocks, block),
        reasoning_mark=len(reasoning),
    )


def _call_start(s: State, e: ev.ToolCallStart) -> State:
    _require_step(s, e)
    if s.call(e.call_id) is not None:
        raise ReduceError(f"tool_call_start for tool call {e.call_id!r}, which already started")
    return _evolve(s, seq=e.seq, tool_calls=(*s.tool_calls, ToolCallState(e.call_id, e.name)))


def _call_delta(s: State, e: ev.ToolCallDelta) -> State:
    i, c = _open_call(s, e, "streaming")
    return _put_call(s, e.seq, i, _evolve(c, arguments_text=c.arguments_text.append(e.delta)))


def _call(s: State, e: ev.ToolCall) -> State:
    return _with_call(s, e, "streaming", status="running", arguments=e.arguments)


def _approval_requested(s: State, e: ev.ToolApprovalRequested) -> State:
    return _with_call(s, e, "running", status="awaiting_approval", approval="requested")


def _approval(s: State, e: ev.ToolApproval) -> State:
    decision = "approved" if e.approved else "denied"
    after = _with_call(s, e, "awaiting_approval", status="running", approval=decision)
    return _evolve(after, command_ids=_remember(s, e.command_id, e.seq))


def _progress(s: State, e: ev.ToolProgress) -> State:
    return _with_call(s, e, "running", progress=(e.progress, e.total, e.message))


def _result(s: State, e: ev.ToolResult) -> State:
    c = s.call(e.call_id)
    # A call whose arguments never parsed ends without a tool_call: from "streaming";
    # a call cancelled while it waited for approval ends from "awaiting_approval".
    expected = "running" if c is None or c.status not in OPEN_CALL_STATUSES else c.status
    approval = c.approval if c is not None else None
    if (
        c is not None
        and e.status != "cancelled"
        and (e.status == "denied") != (approval == "denied")
    ):
        raise ReduceError(
            f"tool_result {e.status!r} for tool call {e.call_id!r}, whose approval is "
            f"{approval or 'not needed'}"
        )
    return _with_call(s, e, expected, status=e.status, result=e.result, error=e.error)


def _interrupt(s: State, e: ev.Interrupt) -> State:
    return _evolve(s, seq=e.seq, interrupting=e.mode, command_ids=_remember(s, e.command_id, e.seq))


def _interrupted(s: State, e: ev.Interrupted) -> State:
    _open_calls_error(s, e.type)
    return _evolve(s, **_STEP_CLOSED, seq=e.seq, messages=_close_step(s, cut=e.mode == "hard"))


def _resume(s: State, e: ev.Resume) -> State:
    pending = s.pending_inputs if e.instruction is None else (*s.pending_inputs, e.instruction)
    return _evolve(
        s, seq=e.seq, pending_inputs=pending, command_ids=_remember(s, e.command_id, e.seq)
    )


def _model_finished(s: State, e: ev.ModelFinished) -> State:
    _require_step(s, e)
    return _evolve(s, seq=e.seq)


def _error(s: State, e: ev.Error) -> State:
    return _evolve(s, seq=e.seq, error=e)


def _done(s: State, e: ev.Done) -> State:
    _open_calls_error(s, e.type)
    usage = Usage(int(e.usage.get("input_tokens", 0)), int(e.usage.get("output_tokens", 0)))
    return _evolve(
        s,
        **_STEP_CLOSED,
        seq=e.seq,
        messages=_close_step(s, cut=e.status != "completed"),
        usage=usage,
        done_text=e.text,
        command_ids=_remember(s, e.command_id, e.seq),
    )


_Handler = Callable[[State, Any], State]

HANDLERS: Final[Mapping[str, _Handler]] = {
    "user_input": _user_input,
    "run_started": _run_started,
    "thinking": _thinking,
    "token_stream": _token,
    "reasoning": _reasoning,
    "model_finished": _model_finished,
    "tool_call_start": _call_start,
    "tool_call_delta": _call_delta,
    "tool_call": _call,
    "tool_approval_requested": _approval_requested,
    "tool_approval": _approval,
    "tool_progress": _progress,
    "tool_result": _result,
    "interrupt": _interrupt,
    "interrupted": _interrupted,
    "resume": _resume,
    "error": _error,
    "done": _done,
}
"""The data handler of each event type (every field but the status)."""

assert {k for row in TRANSITIONS.values() for k in row} == set(HANDLERS)


def reduce(state: State, event: ev.Event) -> State:
    """The state after ``event``.  Pure: ``state`` is never changed.

    Raises :class:`~trio_agent.errors.ReduceError` (and changes nothing) for an event
    that is illegal in ``state``: a wrong status, a run or step out of order, an unknown
    or finished tool call, a run ending with a tool call left without its result.
    """
    kind = event.type
    to = TRANSITIONS[state.status].get(kind)
    if to is None:
        raise ReduceError(f"can't apply {kind!r} event in state {state.status!r}")
    new = HANDLERS[kind](state, event)
    if to is not SAME:
        if not isinstance(to, str):
            to = to[event.status]  # type: ignore[attr-defined]
        if to != new.status:
            fields = list(new)
            fields[_STATUS] = to
            new = _tuple_new(State, fields)
    return new


def token_legal(s: State) -> bool:
    """Whether a ``token_stream`` event is legal in ``s`` — and, since a token changes
    neither the status nor the open step, in every state a run of tokens leads to."""
    return s.step_open and TRANSITIONS[s.status].get("token_stream") is SAME


def fold_tokens(s: State, events: Sequence[ev.TokenStream]) -> State:
    """``reduce`` folded over a run of ``token_stream`` events, in one state copy.

    Exactly equal to ``functools.reduce(reduce, events, s)`` (a property test checks
    it); the bus uses it to apply the tokens published since the state was last read
    in one go.  Raises ``ReduceError`` if tokens are illegal in ``s``.
    """
    if not events:
        return s
    if not token_legal(s):
        reduce(s, events[0])  # raises the ReduceError that says why
    text = s.text.extend([e.text for e in events])
    fields = list(s)
    fields[_SEQ] = events[-1].seq
    fields[_TEXT] = text
    return _tuple_new(State, fields)


def replay(events: Iterable[ev.Event], state: State) -> State:
    """Fold ``reduce`` over ``events``, starting from ``state``."""
    for e in events:
        state = reduce(state, e)
    return state
