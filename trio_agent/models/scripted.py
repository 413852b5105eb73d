"""The scripted model: offline, deterministic, the embedded default (DESIGN §5).

A script is JSON::

    {"turns": [
        {"tokens": ["Let", " me", " check"], "delay": 0.01,
         "tool_calls": [{"id": "c1", "name": "sleep", "arguments": {"seconds": 0.5}}]},
        {"echo": true},
        {"tokens": ["Done."]}
    ]}

**Which turn plays.**  A model call plays turn *n* where *n* is the number of assistant
messages already in the conversation it is given (the first call plays turn 0).  The
turn depends on the conversation, not on how often the model was called, so one
:class:`ScriptedModel` serves any number of sessions, each from its first turn, and a
retried or resumed step plays the turn that follows the assistant messages it has.

**How a turn streams.**

- ``tokens``: one :class:`TextDelta` each, in order.
- ``tool_calls``: one after another, the way OpenAI streams them: index *i* for the
  *i*-th call; its arguments (``orjson`` text of the ``arguments`` object, or the given
  string verbatim — a way to script malformed arguments) cut into thirds; the id and name
  ride on the first chunk.  No :class:`ToolCallEnd`: the calls complete when the stream
  finishes.  A call without ``id`` gets none (the assembler makes one up).
- ``delay`` (seconds, default 0): a ``trio.sleep`` *between* chunks (text and tool-call
  alike), none before the first; with 0 the turn streams without checkpoints.
- ``{"echo": true}``: the newest user message comes back, one word per token (with its
  whitespace, so the tokens join to the message exactly); ``delay`` applies too.
- Then :class:`Finish`, reason ``tool_calls`` if the turn made calls, else ``stop``, with
  ``Usage(input_tokens=<words in all message contents>, output_tokens=<text tokens>)``.

**Out of turns.**  A call past the last turn streams nothing and finishes with
``reason="stop"`` — the agent sees an empty answer and the run completes.

Scripts are checked when the model is made; :class:`ScriptError` names the turn and field.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from importlib import resources
from os import PathLike
from typing import Any, Final

import attrs
import orjson
import trio

from .._core.model import Chunk, Finish, Message, TextDelta, ToolCallChunk, ToolSpec, Usage

__all__ = [
    "MAX_DELAY",
    "MAX_TURNS",
    "ScriptBuilder",
    "ScriptError",
    "ScriptedModel",
]

MAX_DELAY: Final = 60.0
"""The longest ``delay`` between chunks a script may ask for.  A scripted model stands in
for a live one, whose tokens come many per second; a longer gap is a typo (milliseconds
written as seconds) that would make a demo look hung."""

MAX_TURNS: Final = 10_000
"""The most turns a script may have: scripts are written by hand or by tests, and the
whole script is held in memory."""

ARGUMENT_FRAGMENTS: Final = 3
"""Into how many fragments a tool call's argument text is cut (at fixed points, so
runs are reproducible): enough that consumers see a call's JSON arrive in pieces,
split in the middle of keys and values, as it does from real providers."""

_TURN_KEYS: Final = frozenset({"tokens", "delay", "tool_calls"})
_ECHO_KEYS: Final = frozenset({"echo", "delay"})
_CALL_KEYS: Final = frozenset({"id", "name", "arguments"})
_WORDS: Final = re.compile(r"\s*\S+(?:\s+$)?")


class ScriptError(ValueError):
    """A script that can't be played; the message names the turn and the field."""


@attrs.frozen(slots=True)
class _Call:
    call_id: str | None
    name: str
    arguments: str  # the JSON text as streamed


@attrs.frozen(slots=True)
class _Turn:
    tokens: tuple[str, ...] = ()
    delay: float = 0.0
    tool_calls: tuple[_Call, ...] = ()
    echo: bool = False


def _keys(where: str, given: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ScriptError(
            f"{where}: unknown field {unknown[0]!r}; expected one of "
            f"{', '.join(repr(k) for k in sorted(allowed))}"
        )


def _delay(where: str, turn: Mapping[str, Any]) -> float:
    delay = turn.get("delay", 0.0)
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or not 0 <= delay <= MAX_DELAY
    ):
        raise ScriptError(
            f"{where}: 'delay' must be a number of seconds from 0 to {MAX_DELAY:g}, got {delay!r}"
        )
    return float(delay)


def _tool_call(where: str, call: Any) -> _Call:
    if not isinstance(call, Mapping):
        raise ScriptError(f"{where} must be an object, got {call!r}")
    _keys(where, call, _CALL_KEYS)
    call_id = call.get("id")
    if call_id is not None and (not isinstance(call_id, str) or not call_id):
        raise ScriptError(f"{where}: 'id' must be a non-empty string, got {call_id!r}")
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise ScriptError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    arguments = call.get("arguments", {})
    if isinstance(arguments, Mapping):
        try:
            text = orjson.dumps(dict(arguments)).decode()
        except TypeError as exc:
            raise ScriptError(f"{where}: 'arguments' is not JSON: {exc}") from None
    elif isinstance(arguments, str):
        text = arguments
    else:
        raise ScriptError(
            f"{where}: 'arguments' must be an object (or a string of raw JSON text), "
            f"got {arguments!r}"
        )
    return _Call(call_id, name, text)


def _turn(index: int, turn: Any) -> _Turn:
    where = f"turn {index}"
    if not isinstance(turn, Mapping):
        raise ScriptError(f"{where} must be an object, got {turn!r}")
    if "echo" in turn:
        if turn["echo"] is not True:
            raise ScriptError(f"{where}: 'echo' must be true, got {turn['echo']!r}")
        _keys(f"{where} (an echo turn)", turn, _ECHO_KEYS)
        return _Turn(delay=_delay(where, turn), echo=True)
    _keys(where, turn, _TURN_KEYS)
    tokens = turn.get("tokens", [])
    if not isinstance(tokens, Sequence) or isinstance(tokens, str):
        raise ScriptError(f"{where}: 'tokens' must be a list of strings, got {tokens!r}")
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise ScriptError(f"{where}: 'tokens'[{i}] must be a string, got {token!r}")
    raw_calls = turn.get("tool_calls", [])
    if not isinstance(raw_calls, Sequence) or isinstance(raw_calls, str):
        raise ScriptError(f"{where}: 'tool_calls' must be a list, got {raw_calls!r}")
    calls = tuple(
        _tool_call(f"{where}: 'tool_calls'[{i}]", call) for i, call in enumerate(raw_calls)
    )
    ids = [c.call_id for c in calls if c.call_id is not None]
    for i, call_id in enumerate(ids):
        if call_id in ids[:i]:
            raise ScriptError(f"{where}: two tool calls have the id {call_id!r}")
    return _Turn(tuple(tokens), _delay(where, turn), calls)


def _parse_script(script: Any) -> tuple[_Turn, ...]:
    if not isinstance(script, Mapping):
        raise ScriptError(f"a script must be an object with 'turns', got {script!r}")
    _keys("the script", script, frozenset({"turns"}))
    turns = script.get("turns")
    if not isinstance(turns, Sequence) or isinstance(turns, str):
        raise ScriptError(f"the script's 'turns' must be a list, got {turns!r}")
    if len(turns) > MAX_TURNS:
        raise ScriptError(f"the script has {len(turns)} turns; the limit is {MAX_TURNS}")
    return tuple(_turn(i, turn) for i, turn in enumerate(turns))


def _fragments(text: str) -> list[str]:
    """``text`` cut at fixed points into at most ``ARGUMENT_FRAGMENTS`` non-empty pieces
    (the first may be empty: it carries the id and name)."""
    cuts = [len(text) * k // ARGUMENT_FRAGMENTS for k in range(ARGUMENT_FRAGMENTS + 1)]
    pieces = [text[a:b] for a, b in itertools.pairwise(cuts)]
    return [pieces[0], *(p for p in pieces[1:] if p)]


def _words(text: str) -> int:
    return len(text.split())


class ScriptedModel:
    """A model that plays a script (see the module docstring for the format)."""

    provider_name: Final = "trio_agent.scripted"
    """``Model.provider_name``: no provider, a script played in this process."""
    model_name: Final = "scripted"

    def __init__(self, script: Mapping[str, Any]) -> None:
        self._turns = _parse_script(script)
        self._script: dict[str, Any] = orjson.loads(orjson.dumps(dict(script)))

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> ScriptedModel:
        """A model playing the script in the JSON file ``path``.  Raises ``OSError`` if
        it can't be read and :class:`ScriptError` if it isn't a valid script."""
        with open(path, "rb") as f:
            data = f.read()
        try:
            script = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ScriptError(f"script file {str(path)!r} is not valid JSON: {exc}") from None
        try:
            return cls(script)
        except ScriptError as exc:
            raise ScriptError(f"script file {str(path)!r}: {exc}") from None

    @classmethod
    def demo(cls) -> ScriptedModel:
        """The built-in demo script (``trio_agent/scripts/demo.json``): a calculation, a
        slow tool, an echo of the user's message and a closing word."""
        data = resources.files("trio_agent").joinpath("scripts", "demo.json").read_bytes()
        return cls(orjson.loads(data))

    @property
    def script(self) -> dict[str, Any]:
        """The script, as JSON data (a copy)."""
        return orjson.loads(orjson.dumps(self._script))  # type: ignore[no-any-return]

    @property
    def turns(self) -> int:
        """How many turns the script has."""
        return len(self._turns)

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[Chunk]:
        """Play the turn after the conversation's assistant messages."""
        played = sum(1 for m in messages if m.role == "assistant")
        turn = self._turns[played] if played < len(self._turns) else _Turn()
        usage_in = sum(_words(m.content) for m in messages)
        return self._play(turn, messages, usage_in)

    async def _play(
        self, turn: _Turn, messages: Sequence[Message], input_tokens: int
    ) -> AsyncIterator[Chunk]:
        tokens = turn.tokens
        if turn.echo:
            newest = next((m.content for m in reversed(messages) if m.role == "user"), "")
            tokens = tuple(_WORDS.findall(newest))
        chunks: list[Chunk] = [TextDelta(t) for t in tokens]
        for index, call in enumerate(turn.tool_calls):
            first, *rest = _fragments(call.arguments)
            chunks.append(ToolCallChunk(index, call.call_id, call.name, first))
            chunks.extend(ToolCallChunk(index, arguments=piece) for piece in rest)
        for i, chunk in enumerate(chunks):
            if i and turn.delay > 0:
                await trio.sleep(turn.delay)
            yield chunk
        reason = "tool_calls" if turn.tool_calls else "stop"
        yield Finish(reason, Usage(input_tokens=input_tokens, output_tokens=len(tokens)))

    async def aclose(self) -> None:
        """Nothing to release."""


class ScriptBuilder:
    """Builds a script in Python; each method returns a new builder.

    >>> ScriptBuilder().turn(tokens=["Hi"]).echo().build()
    {'turns': [{'tokens': ['Hi'], 'delay': 0.0, 'tool_calls': []}, {'echo': True, 'delay': 0.0}]}
    """

    __slots__ = ("_turns",)

    def __init__(self, turns: Sequence[Mapping[str, Any]] = ()) -> None:
        self._turns: tuple[Mapping[str, Any], ...] = tuple(turns)

    def turn(
        self,
        tokens: Sequence[str] = (),
        *,
        delay: float = 0.0,
        tool_calls: Sequence[Mapping[str, Any]] = (),
    ) -> ScriptBuilder:
        """Add a turn that streams ``tokens`` then makes ``tool_calls``
        (``{"id", "name", "arguments"}`` each)."""
        turn = {"tokens": list(tokens), "delay": delay, "tool_calls": [dict(c) for c in tool_calls]}
        _turn(len(self._turns), turn)
        return ScriptBuilder((*self._turns, turn))

    def echo(self, *, delay: float = 0.0) -> ScriptBuilder:
        """Add a turn that streams back the newest user message."""
        turn = {"echo": True, "delay": delay}
        _turn(len(self._turns), turn)
        return ScriptBuilder((*self._turns, turn))

    def build(self) -> dict[str, Any]:
        """The script, as JSON data for :class:`ScriptedModel`."""
        return {"turns": orjson.loads(orjson.dumps([dict(t) for t in self._turns]))}

    def model(self) -> ScriptedModel:
        """A :class:`ScriptedModel` playing this script."""
        return ScriptedModel(self.build())
