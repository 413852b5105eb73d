"""The reducer: ``reduce(state, event) -> state``, pure and sans-I/O.

The session's state is a fold of its log: ``publish`` applies ``reduce`` to every event
before fan-out, and replaying the log from :func:`initial_state` rebuilds the live state
exactly (crash recovery and reconnect rely on it).  The agent loop reads the model's
input (``state.messages``) from here, so a steering message that the reducer has put in
``pending_inputs`` is in the next step's input by construction.

Transitions are a table, h11 style: ``_TRANSITIONS[(status, event type)]`` names the
handler.  An event that is illegal in the current state raises :class:`ReduceError`
naming the event and the state; the state is a frozen value, so it is unchanged.

The assistant text grows by one ``token_stream`` at a time: :class:`Text` appends in
amortized O(1) by sharing an append-only list between successive values, so a run of n
tokens costs O(n), not O(n²).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeVar

from . import events as ev
from .errors import ReduceError
from .models._base import Message, ReasoningBlock, ToolCallRecord, Usage

__all__ = [
    "STATUSES",
    "ReduceError",
    "State",
    "Text",
    "ToolCallState",
    "fold_tokens",
    "initial_state",
    "reduce",
    "token_legal",
]

_T = TypeVar("_T", bound=tuple[Any, ...])

STATUSES: Final = ("idle", "thinking", "acting", "interrupted", "done", "error")


_tuple_new = tuple.__new__


class Text(tuple):  # type: ignore[type-arg]
    """An immutable string value that appends in amortized O(1).

    Successive values share one append-only list of parts; a value owns the first
    ``n`` parts.  Appending to the newest value extends the list in place; appending to
    an older value (a branch: rare, replays in tests) copies its parts first.  So the
    value semantics are those of ``str``, and a linear history costs O(total length).
    A tuple ``(parts, n)`` underneath: the token path makes one per token.
    """

    __slots__ = ()

    def __new__(cls, parts: list[str] | None = None, n: int = 0) -> Text:
        return _tuple_new(cls, ([] if parts is None else parts, n))

    def append(self, text: str) -> Text:
        parts, n = self
        if n == 0:
            parts = []  # never grow the shared empty value's list
        elif len(parts) != n:
            parts = parts[:n]
        parts.append(text)
        return _tuple_new(Text, (parts, n + 1))

    def tail(self, k: int) -> str:
        """The last ``k`` appended parts, joined (``k`` at most the parts appended)."""
        parts, n = self
        return "".join(parts[n - k : n]) if k else ""

    def __len__(self) -> int:
        """The length of the text (not of the tuple underneath)."""
        parts, n = self
        return sum(map(len, parts[:n])) if n != len(parts) else sum(map(len, parts))

    def __bool__(self) -> bool:
        return self[1] > 0 and any(self[0][: self[1]])

    def __str__(self) -> str:
        parts, n = self
        if n == len(parts):
            return "".join(parts)
        return "".join(parts[:n])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Text):
            return str(self) == str(other)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"Text({str(self)!r})"


_EMPTY: Final = Text()


class ToolCallState(NamedTuple):
    """A tool call of the current step.

    ``status`` is ``streaming`` (arguments arriving), ``running`` (executing), or the
    ``tool_result`` status.
    """

    call_id: str
    name: str
    status: str = "streaming"
    arguments_text: Text = _EMPTY
    arguments: Mapping[str, Any] | None = None
    result: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "name": self.name,
            "status": self.status,
            "arguments_text": str(self.arguments_text),
            "arguments": self.arguments,
            "result": self.result,
            "error": self.error,
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
    - ``usage``: tokens of the last finished run; ``error``: the last error event.
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

    @property
    def running(self) -> bool:
        """A run is going (thinking or acting)."""
        return self.status in ("thinking", "acting")

    def call(self, call_id: str) -> ToolCallState | None:
        for call in self.tool_calls:
            if call.call_id == call_id:
                return call
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


# ---- handlers -----------------------------------------------------------------------


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
    import orjson

    if c.status == "ok":
        return orjson.dumps(c.result).decode() if not isinstance(c.result, str) else c.result
    return c.error or c.status


def _user_input(s: State, e: ev.UserInput) -> State:
    return _evolve(s, seq=e.seq, pending_inputs=(*s.pending_inputs, e.text))


def _run_started(s: State, e: ev.RunStarted) -> State:
    if e.run != s.run + 1:
        raise ReduceError(f"run_started for run {e.run}, expected run {s.run + 1}")
    return _evolve(
        s,
        seq=e.seq,
        status="thinking",
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
        seq=e.seq,
        status="thinking",
        step=e.step,
        messages=messages,
        text=_EMPTY,
        reasoning=_EMPTY,
        reasoning_blocks=(),
        reasoning_mark=0,
        tool_calls=(),
        step_open=True,
        pending_inputs=(),
    )


def _require_step(s: State, e: ev.Event) -> None:
    if not s.step_open:
        raise ReduceError(f"{e.type} before the step's thinking event in run {s.run}")


def _token(s: State, e: ev.TokenStream) -> State:
    # The hot path (one call per token): ``_evolve`` without the keyword plumbing.
    if not s.step_open:
        _require_step(s, e)
    fields = list(s)
    fields[_SEQ] = e.seq
    fields[_TEXT] = s.text.append(e.text)
    return _tuple_new(State, fields)


def token_legal(s: State) -> bool:
    """Whether a ``token_stream`` event is legal in ``s`` — and, since a token changes
    neither the status nor the open step, in every state a run of tokens leads to."""
    return s.step_open and (s.status == "thinking" or s.status == "acting")


def fold_tokens(s: State, events: Sequence[ev.TokenStream]) -> State:
    """``reduce`` folded over a run of ``token_stream`` events, in one state copy.

    Exactly equal to ``functools.reduce(reduce, events, s)`` (a property test checks
    it); the bus uses it to apply the tokens published since the state was last read
    in one go.  Raises :class:`ReduceError` if tokens are illegal in ``s``.
    """
    if not events:
        return s
    if not token_legal(s):
        reduce(s, events[0])  # raises the ReduceError that says why
    text = s.text
    for e in events:
        text = text.append(e.text)
    fields = list(s)
    fields[_SEQ] = events[-1].seq
    fields[_TEXT] = text
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


def _update_call(
    s: State,
    call_id: str,
    event_type: str,
    status: str,
    change: Callable[[ToolCallState], ToolCallState],
) -> tuple[ToolCallState, ...]:
    """The step's tool calls with ``call_id`` (which must be in ``status``) changed."""
    for i, c in enumerate(s.tool_calls):
        if c.call_id == call_id:
            if c.status != status:
                raise ReduceError(f"{event_type} for tool call {call_id!r}, which is {c.status}")
            return (*s.tool_calls[:i], change(c), *s.tool_calls[i + 1 :])
    raise ReduceError(f"{event_type} for unknown tool call {call_id!r}")


def _call_start(s: State, e: ev.ToolCallStart) -> State:
    _require_step(s, e)
    if s.call(e.call_id) is not None:
        raise ReduceError(f"tool_call_start for tool call {e.call_id!r}, which already started")
    return _evolve(s, seq=e.seq, tool_calls=(*s.tool_calls, ToolCallState(e.call_id, e.name)))


def _call_delta(s: State, e: ev.ToolCallDelta) -> State:
    calls = _update_call(
        s,
        e.call_id,
        e.type,
        "streaming",
        lambda c: _evolve(c, arguments_text=c.arguments_text.append(e.delta)),
    )
    return _evolve(s, seq=e.seq, tool_calls=calls)


def _call(s: State, e: ev.ToolCall) -> State:
    calls = _update_call(
        s,
        e.call_id,
        e.type,
        "streaming",
        lambda c: _evolve(c, status="running", arguments=e.arguments),
    )
    return _evolve(s, seq=e.seq, status="acting", tool_calls=calls)


def _result(s: State, e: ev.ToolResult) -> State:
    c = s.call(e.call_id)
    # A call whose arguments never parsed ends without a tool_call: from "streaming".
    expected = "running" if c is None or c.status != "streaming" else "streaming"
    calls = _update_call(
        s,
        e.call_id,
        e.type,
        expected,
        lambda c: _evolve(c, status=e.status, result=e.result, error=e.error),
    )
    return _evolve(s, seq=e.seq, tool_calls=calls)


def _interrupt(s: State, e: ev.Interrupt) -> State:
    return _evolve(s, seq=e.seq, interrupting=e.mode)


def _open_calls_error(s: State, event_type: str) -> None:
    open_calls = [c.call_id for c in s.tool_calls if c.status in ("streaming", "running")]
    if open_calls:
        raise ReduceError(f"{event_type} while tool calls {open_calls!r} have no tool_result")


def _interrupted(s: State, e: ev.Interrupted) -> State:
    _open_calls_error(s, e.type)
    return _evolve(
        s,
        seq=e.seq,
        status="interrupted",
        messages=_close_step(s, cut=e.mode == "hard"),
        text=_EMPTY,
        reasoning=_EMPTY,
        reasoning_blocks=(),
        reasoning_mark=0,
        tool_calls=(),
        step_open=False,
        interrupting=None,
    )


def _resume(s: State, e: ev.Resume) -> State:
    pending = s.pending_inputs if e.instruction is None else (*s.pending_inputs, e.instruction)
    return _evolve(s, seq=e.seq, status="thinking", pending_inputs=pending)


def _error(s: State, e: ev.Error) -> State:
    return _evolve(s, seq=e.seq, error=e)


def _done(s: State, e: ev.Done) -> State:
    _open_calls_error(s, e.type)
    usage = Usage(int(e.usage.get("input_tokens", 0)), int(e.usage.get("output_tokens", 0)))
    return _evolve(
        s,
        seq=e.seq,
        status="done" if e.status != "failed" else "error",
        messages=_close_step(s, cut=e.status != "completed"),
        text=_EMPTY,
        reasoning=_EMPTY,
        reasoning_blocks=(),
        reasoning_mark=0,
        tool_calls=(),
        step_open=False,
        interrupting=None,
        usage=usage,
        done_text=e.text,
    )


_Handler = Callable[[State, Any], State]
_RUNNING: Final = ("thinking", "acting")
_ANY: Final = STATUSES

# (statuses in which the event is legal, handler), per event type.
_TABLE: Final[Mapping[str, tuple[Iterable[str], _Handler]]] = {
    "user_input": (_ANY, _user_input),
    "run_started": (("idle", "done", "error"), _run_started),
    "thinking": (_RUNNING, _thinking),
    "token_stream": (_RUNNING, _token),
    "reasoning": (_RUNNING, _reasoning),
    "tool_call_start": (_RUNNING, _call_start),
    "tool_call_delta": (_RUNNING, _call_delta),
    "tool_call": (_RUNNING, _call),
    "tool_result": (_RUNNING, _result),
    "interrupt": (_RUNNING, _interrupt),
    "interrupted": (_RUNNING, _interrupted),
    "resume": (("interrupted",), _resume),
    "error": (_ANY, _error),
    "done": ((*_RUNNING, "interrupted"), _done),
}

# The table flattened: (status, event type) -> handler.
_TRANSITIONS: Final[dict[tuple[str, str], _Handler]] = {
    (status, kind): handler for kind, (statuses, handler) in _TABLE.items() for status in statuses
}


def reduce(state: State, event: ev.Event) -> State:
    """The state after ``event``.  Pure: ``state`` is never changed.

    Raises :class:`ReduceError` (and changes nothing) for an event that is illegal in
    ``state``: a wrong status, a run or step out of order, an unknown or finished
    tool call, a run ending with a tool call left without its result.
    """
    handler = _TRANSITIONS.get((state.status, event.type))
    if handler is None:
        raise ReduceError(f"can't apply {event.type!r} event in state {state.status!r}")
    return handler(state, event)


def replay(events: Iterable[ev.Event], state: State) -> State:
    """Fold ``reduce`` over ``events``, starting from ``state``."""
    for e in events:
        state = reduce(state, e)
    return state
