"""The tool-call assembler: streamed tool-call chunks in, facts about calls out.

Sans-I/O, in the manner of h11: no ``await``, no I/O, no clock.  The agent loop feeds it
the :class:`~trio_agent.models.ToolCallChunk` and :class:`~trio_agent.models.ToolCallEnd`
chunks of one model call, in order, and publishes the facts it returns:

- :class:`CallStarted` as soon as a call's id and name are known;
- :class:`ArgumentsDelta` for each fragment of its JSON arguments, as streamed
  (fragments that came before the name are held back and emitted as one delta right
  after ``CallStarted``; empty fragments produce no fact);
- :class:`CallReady` when the call is complete: at its ``ToolCallEnd`` (so a tool can
  start before the stream ends), for a whole call (``index=None``) at once, or at
  :meth:`ToolCallAssembler.finish` for the rest;
- :class:`CallCut` for every call still open at :meth:`ToolCallAssembler.cut`.

Every call's facts read ``CallStarted, ArgumentsDelta*, (CallReady | CallCut)`` — also a
call that never got a name (it starts with ``name=""`` and ends with an error), so that
every ``tool_call_start`` a consumer sees has exactly one end.

Transitions are tables (``_STREAM_TRANSITIONS``, ``_CALL_TRANSITIONS``).  An input with no
entry raises :class:`AssemblerError`, naming the misuse and the state, and leaves the
assembler exactly as it was: every method computes its whole outcome before committing.
The facts for one input come out in a fixed order, and calls completed together (by
``finish``/``cut``) complete in the order they were first seen, so the same chunks always
give the same facts.

Linear in the fragments: a call's argument text is a :class:`~trio_agent._core.text.Text`
(an append-only list of parts shared by successive records, joined once when the call
completes), so a call streamed in n fragments costs O(n), not O(n²) — a coding agent
writing a 200 KB file through a tool call streams tens of thousands of them.  A record
refused by a check still leaves the committed one as it was: a ``Text`` owns only the
parts it counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs
import orjson

from ..errors import AssemblerError
from .model import ToolCallChunk, ToolCallEnd
from .text import Text

__all__ = [
    "DEFAULT_ID_PREFIX",
    "MAX_ARGUMENTS_CHARS",
    "MAX_CALLS",
    "ArgumentsDelta",
    "AssemblerError",
    "CallCut",
    "CallReady",
    "CallStarted",
    "Fact",
    "ToolCallAssembler",
]

DEFAULT_ID_PREFIX: Final = "call_"
"""Prefix of the ids made up for calls whose provider sent none (``call_1``, …).  The
agent loop passes a per-step prefix so made-up ids never repeat within a session."""

MAX_ARGUMENTS_CHARS: Final = 1_000_000
"""The most characters one call's argument text may have.  Tool arguments are small
(a few hundred characters); a model stuck repeating itself could otherwise grow the
buffer until the process runs out of memory.  A fragment that would pass it is refused."""

MAX_CALLS: Final = 256
"""The most tool calls one model call may make.  Models make a handful in parallel;
this bounds the assembler's table (and the tool tasks that follow) against a runaway
stream."""


# ---- facts --------------------------------------------------------------------------


@attrs.frozen(slots=True)
class CallStarted:
    """Tool call ``call_id`` began; ``name`` is the tool (``""`` if it never got one)."""

    call_id: str
    name: str


@attrs.frozen(slots=True)
class ArgumentsDelta:
    """A fragment of the call's JSON argument text, as streamed (never empty)."""

    call_id: str
    delta: str


@attrs.frozen(slots=True)
class CallReady:
    """The call is complete.

    ``raw_arguments`` is the whole text as streamed; ``arguments`` the parsed JSON object
    (empty text reads as ``{}``), or ``None`` when ``error`` says why it could not be
    used (not valid JSON, not a JSON object, no tool name).
    """

    call_id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None
    error: str | None

    def __attrs_post_init__(self) -> None:
        if (self.arguments is None) == (self.error is None):
            raise ValueError("CallReady takes exactly one of arguments and error")


@attrs.frozen(slots=True)
class CallCut:
    """The stream was cut before the call was complete; ``raw_arguments`` is what came."""

    call_id: str
    name: str
    raw_arguments: str


Fact = CallStarted | ArgumentsDelta | CallReady | CallCut


# ---- transition tables ------------------------------------------------------------

StreamState = Literal["open", "finished", "cut"]
CallState = Literal["new", "unnamed", "streaming", "complete"]
_Input = Literal["chunk", "named_chunk", "end", "finish", "cut"]

_STREAM_TRANSITIONS: Final[Mapping[tuple[StreamState, str], StreamState]] = {
    ("open", "feed"): "open",
    ("open", "finish"): "finished",
    ("open", "cut"): "cut",
    # cut() is the cleanup path (``except``/``finally``): once the stream has ended
    # there is nothing open, and calling it again is harmless.
    ("finished", "cut"): "finished",
    ("cut", "cut"): "cut",
}

_CALL_TRANSITIONS: Final[Mapping[tuple[CallState, _Input], CallState]] = {
    # "named_chunk" is a chunk that brings the call its name (its first, usually).
    ("new", "chunk"): "unnamed",
    ("new", "named_chunk"): "streaming",
    ("unnamed", "chunk"): "unnamed",
    ("unnamed", "named_chunk"): "streaming",
    ("streaming", "chunk"): "streaming",
    ("unnamed", "end"): "complete",
    ("streaming", "end"): "complete",
    ("unnamed", "finish"): "complete",
    ("streaming", "finish"): "complete",
    ("unnamed", "cut"): "complete",
    ("streaming", "cut"): "complete",
}


_NO_TEXT: Final = Text()  # (a shared empty value is safe: appending to it makes a new list)


@attrs.frozen(slots=True)
class _Call:
    """One call's record (replaced, never mutated, so a refused input changes nothing)."""

    index: int | None
    ordinal: int  # 1-based position among this stream's calls
    state: CallState
    call_id: str | None = None
    name: str | None = None
    fragments: Text = _NO_TEXT
    length: int = 0  # total characters in fragments
    held: int = 0  # fragments not yet emitted (they came before the name)

    @property
    def raw(self) -> str:
        return str(self.fragments)

    def describe(self) -> str:
        where = "with no index" if self.index is None else f"at index {self.index}"
        known = f" ({self.call_id!r})" if self.call_id is not None else ""
        return f"tool call {where}{known}"


def _grown(call: _Call, text: str) -> int:
    """The length of ``call``'s arguments with ``text`` added; refuses passing the bound."""
    length = call.length + len(text)
    if length > MAX_ARGUMENTS_CHARS:
        raise AssemblerError(
            f"can't add {len(text)} characters to the arguments of {call.describe()}: "
            f"they would pass {MAX_ARGUMENTS_CHARS} characters (MAX_ARGUMENTS_CHARS)"
        )
    return length


def _parse(call_id: str, name: str, raw: str) -> tuple[dict[str, Any] | None, str | None]:
    what = f"tool call {call_id!r} ({name})" if name else f"tool call {call_id!r}"
    if not name:
        return None, f"tool call {call_id!r} has no tool name"
    if not raw.strip():
        return {}, None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"arguments of {what} are not valid JSON: {exc.msg} at char {exc.pos}"
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        return None, f"arguments of {what} are not a JSON object: got {kind}"
    return value, None


_JSON_KINDS: Final[Mapping[type, str]] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class ToolCallAssembler:
    """Assembles the streamed tool calls of one model call.

    ``id_prefix`` makes the ids of calls whose provider sent none:
    ``f"{id_prefix}{n}"`` with ``n`` the call's 1-based position in the stream.
    """

    def __init__(self, id_prefix: str = DEFAULT_ID_PREFIX) -> None:
        self._id_prefix = id_prefix
        self._state: StreamState = "open"
        # Open and complete calls with an index, in the order first seen.
        self._calls: dict[int, _Call] = {}
        self._count = 0  # calls seen, including whole (index=None) calls
        self._ids: frozenset[str] = frozenset()  # ids given out, to refuse a repeat

    # ---- introspection ----

    @property
    def state(self) -> StreamState:
        """``open``, ``finished`` or ``cut``."""
        return self._state

    @property
    def open_calls(self) -> tuple[int, ...]:
        """Indexes of calls started and not yet complete, in the order first seen."""
        return tuple(i for i, c in self._calls.items() if c.state != "complete")

    # ---- inputs ----

    def feed(self, chunk: ToolCallChunk | ToolCallEnd) -> list[Fact]:
        """The facts one chunk makes.  Raises :class:`AssemblerError` on a misuse."""
        self._check_stream("feed", f"feed {type(chunk).__name__}")
        if isinstance(chunk, ToolCallEnd):
            return self._end(chunk.index)
        if isinstance(chunk, ToolCallChunk):
            if chunk.index is None:
                return self._whole(chunk)
            return self._chunk(chunk)
        raise AssemblerError(f"can't feed {type(chunk).__name__}: not a tool-call chunk")

    def finish(self) -> list[Fact]:
        """The stream ended normally: every open call completes (first seen, first)."""
        self._check_stream("finish", "finish")
        facts = self._close_all("finish")
        self._state = "finished"
        return facts

    def cut(self) -> list[Fact]:
        """The stream was cut: every open call ends as :class:`CallCut`.  Harmless
        after the stream has ended (it returns nothing)."""
        self._check_stream("cut", "cut")
        facts = self._close_all("cut") if self._state == "open" else []
        self._state = _STREAM_TRANSITIONS[(self._state, "cut")]
        return facts

    # ---- internals ----

    def _check_stream(self, what: str, verb: str) -> None:
        if (self._state, what) not in _STREAM_TRANSITIONS:
            ended = "has finished" if self._state == "finished" else "was cut"
            raise AssemblerError(f"can't {verb}: the stream {ended}")

    def _new_call(self, index: int | None) -> _Call:
        call = _Call(index=index, ordinal=self._count + 1, state="new")
        if self._count >= MAX_CALLS:
            raise AssemblerError(
                f"can't start a {call.describe()}: the stream already made {MAX_CALLS} "
                "tool calls (MAX_CALLS)"
            )
        return call

    def _transition(self, call: _Call, event: _Input, what: str) -> CallState:
        try:
            return _CALL_TRANSITIONS[(call.state, event)]
        except KeyError:
            raise AssemblerError(
                f"can't {what} for {call.describe()}: it is {call.state}"
            ) from None

    def _merge(self, call: _Call, chunk: ToolCallChunk) -> _Call:
        """``call`` with the chunk's id, name and fragment added; refuses conflicts."""
        call_id, name = call.call_id, call.name
        if chunk.call_id is not None:
            if call_id is not None and chunk.call_id != call_id:
                raise AssemblerError(
                    f"can't change the id of {call.describe()} from {call_id!r} "
                    f"to {chunk.call_id!r}"
                )
            call_id = chunk.call_id
        if chunk.name is not None:
            if name is not None and chunk.name != name:
                raise AssemblerError(
                    f"can't change the name of {call.describe()} from {name!r} to {chunk.name!r}"
                )
            name = chunk.name
        fragments, length, held = call.fragments, call.length, call.held
        if chunk.arguments:
            length = _grown(call, chunk.arguments)
            fragments = fragments.append(chunk.arguments)
            held += 1
        return attrs.evolve(
            call, call_id=call_id, name=name, fragments=fragments, length=length, held=held
        )

    def _assign_id(self, call: _Call, ids: frozenset[str]) -> _Call:
        call_id = call.call_id
        if call_id is None:
            call_id = f"{self._id_prefix}{call.ordinal}"
        if call_id in ids:
            raise AssemblerError(
                f"can't start {call.describe()} as {call_id!r}: a call with that id already started"
            )
        return attrs.evolve(call, call_id=call_id)

    def _start_facts(self, call: _Call) -> tuple[_Call, list[Fact]]:
        """Facts for a call that just got its id and name: start, then held fragments."""
        assert call.call_id is not None
        facts: list[Fact] = [CallStarted(call.call_id, call.name or "")]
        facts.extend(self._release(call))
        return attrs.evolve(call, held=0), facts

    @staticmethod
    def _release(call: _Call) -> list[Fact]:
        if not call.held:
            return []
        assert call.call_id is not None
        return [ArgumentsDelta(call.call_id, call.fragments.tail(call.held))]

    @staticmethod
    def _complete_fact(call: _Call, how: _Input) -> Fact:
        assert call.call_id is not None
        name, raw = call.name or "", call.raw
        if how == "cut":
            return CallCut(call.call_id, name, raw)
        arguments, error = _parse(call.call_id, name, raw)
        return CallReady(call.call_id, name, raw, arguments, error)

    def _complete(self, call: _Call, how: _Input, ids: frozenset[str]) -> tuple[_Call, list[Fact]]:
        """Facts that end ``call``; a call not started yet starts first."""
        facts: list[Fact] = []
        if call.state == "unnamed":
            call = self._assign_id(call, ids)
            ids = ids | {call.call_id or ""}
            call, facts = self._start_facts(call)
        call = attrs.evolve(call, state=self._transition(call, how, how))
        facts.append(self._complete_fact(call, how))
        return call, facts

    def _chunk(self, chunk: ToolCallChunk) -> list[Fact]:
        assert chunk.index is not None
        call = self._calls.get(chunk.index)
        if (
            call is not None
            and call.state == "streaming"
            and (chunk.call_id is None or chunk.call_id == call.call_id)
            and (chunk.name is None or chunk.name == call.name)
        ):
            return self._more(call, chunk.arguments)
        count = self._count
        if call is None:
            call = self._new_call(chunk.index)
            count += 1
        # A chunk that names a call already named is an ordinary fragment.
        event: _Input = "named_chunk" if chunk.name is not None and call.name is None else "chunk"
        state = self._transition(call, event, "feed a ToolCallChunk")
        call = self._merge(call, chunk)
        ids = self._ids
        facts: list[Fact] = []
        if state == "streaming" and call.state != "streaming":
            call = self._assign_id(call, ids)
            ids = ids | {call.call_id or ""}
            call, facts = self._start_facts(call)
        elif state == "streaming":
            facts = self._release(call)
            call = attrs.evolve(call, held=0)
        call = attrs.evolve(call, state=state)
        # Commit.
        self._calls[chunk.index] = call
        self._count, self._ids = count, ids
        return facts

    def _more(self, call: _Call, text: str) -> list[Fact]:
        """The common case, a fragment of a call already streaming: what the general
        path of :meth:`_chunk` does for it (``("streaming", "chunk") -> "streaming"``,
        the fragment emitted at once), in one record instead of three."""
        if not text:
            return []
        length = _grown(call, text)
        assert call.call_id is not None and call.index is not None
        self._calls[call.index] = _Call(
            call.index,
            call.ordinal,
            "streaming",
            call.call_id,
            call.name,
            call.fragments.append(text),
            length,
            0,
        )
        return [ArgumentsDelta(call.call_id, text)]

    def _end(self, index: int) -> list[Fact]:
        call = self._calls.get(index)
        if call is None:
            raise AssemblerError(
                f"can't feed ToolCallEnd for tool call at index {index}: no such call started"
            )
        call, facts = self._complete(call, "end", self._ids)
        self._calls[index] = call
        if call.call_id is not None:
            self._ids = self._ids | {call.call_id}
        return facts

    def _whole(self, chunk: ToolCallChunk) -> list[Fact]:
        call = self._merge(self._new_call(None), chunk)
        event: _Input = "named_chunk" if chunk.name is not None else "chunk"
        call = attrs.evolve(call, state=self._transition(call, event, "feed a ToolCallChunk"))
        call = self._assign_id(call, self._ids)
        call, facts = self._start_facts(call)
        call = attrs.evolve(call, state=self._transition(call, "finish", "complete"))
        facts.append(self._complete_fact(call, "finish"))
        # Commit.
        self._count += 1
        self._ids = self._ids | {call.call_id or ""}
        return facts

    def _close_all(self, how: _Input) -> list[Fact]:
        calls = dict(self._calls)
        ids = self._ids
        facts: list[Fact] = []
        for index, call in calls.items():
            if call.state == "complete":
                continue
            done, more = self._complete(call, how, ids)
            ids = ids | {done.call_id or ""}
            calls[index] = done
            facts.extend(more)
        # Commit.
        self._calls, self._ids = calls, ids
        return facts
