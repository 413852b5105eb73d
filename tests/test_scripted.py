"""The scripted model: turns, streaming, echo, usage, validation, the demo script."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from trio_agent._core.assembler import CallReady, ToolCallAssembler
from trio_agent.models import (
    Chunk,
    Finish,
    Message,
    Model,
    TextDelta,
    ToolCallChunk,
    ToolCallEnd,
    ToolCallRecord,
    Usage,
)
from trio_agent.models.scripted import MAX_DELAY, ScriptBuilder, ScriptedModel, ScriptError

pytestmark = pytest.mark.timeout(10)


async def play(model: ScriptedModel, messages: Sequence[Message]) -> list[Chunk]:
    with trio.fail_after(100):
        return [chunk async for chunk in model.stream(messages, [])]


def assistant(text: str = "") -> Message:
    return Message("assistant", text)


USER = Message("user", "what is two plus two")


async def test_is_a_model() -> None:
    model = ScriptBuilder().model()
    assert isinstance(model, Model)
    await model.aclose()


async def test_a_text_turn_streams_each_token_then_finishes_with_usage() -> None:
    model = ScriptedModel(ScriptBuilder().turn(tokens=["Hel", "lo", " there"]).build())
    assert await play(model, [USER]) == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta(" there"),
        Finish("stop", Usage(input_tokens=5, output_tokens=3)),
    ]


async def test_the_turn_is_picked_by_the_assistant_messages_in_the_conversation() -> None:
    model = ScriptBuilder().turn(tokens=["one"]).turn(tokens=["two"]).model()
    first = [USER]
    second = [USER, assistant("one"), Message("user", "again")]
    # Any order, any number of times: the conversation decides, not a call counter.
    for messages, token in [(second, "two"), (first, "one"), (first, "one"), (second, "two")]:
        chunks = await play(model, messages)
        assert chunks[0] == TextDelta(token)


async def test_out_of_turns_streams_nothing_and_stops() -> None:
    model = ScriptBuilder().turn(tokens=["only"]).model()
    chunks = await play(model, [USER, assistant("only"), Message("user", "more please")])
    assert chunks == [Finish("stop", Usage(input_tokens=8, output_tokens=0))]


async def test_tool_calls_stream_in_fragments_and_assemble_to_the_arguments() -> None:
    calls = [
        {"id": "c1", "name": "calculator", "arguments": {"expression": "(2+3)*7"}},
        {"name": "sleep", "arguments": {"seconds": 3}},
    ]
    model = ScriptBuilder().turn(tokens=["Let me see."], tool_calls=calls).model()
    chunks = await play(model, [USER])
    assert chunks[0] == TextDelta("Let me see.")
    assert not any(isinstance(c, ToolCallEnd) for c in chunks)  # like OpenAI
    tool_chunks = [c for c in chunks if isinstance(c, ToolCallChunk)]
    text = orjson.dumps({"expression": "(2+3)*7"}).decode()
    third = len(text) // 3
    assert tool_chunks[:3] == [
        ToolCallChunk(0, "c1", "calculator", text[:third]),
        ToolCallChunk(0, arguments=text[third : 2 * third]),
        ToolCallChunk(0, arguments=text[2 * third :]),
    ]
    assert [c.index for c in tool_chunks] == [0, 0, 0, 1, 1, 1]
    assert (tool_chunks[3].call_id, tool_chunks[3].name) == (None, "sleep")
    assert chunks[-1] == Finish("tool_calls", Usage(input_tokens=5, output_tokens=1))
    assembler = ToolCallAssembler("gen_")
    facts = [f for c in tool_chunks for f in assembler.feed(c)] + assembler.finish()
    assert [(f.call_id, f.name, f.arguments) for f in facts if isinstance(f, CallReady)] == [
        ("c1", "calculator", {"expression": "(2+3)*7"}),
        ("gen_2", "sleep", {"seconds": 3}),
    ]


async def test_raw_argument_text_is_streamed_verbatim() -> None:
    model = ScriptBuilder().turn(tool_calls=[{"id": "b", "name": "t", "arguments": '{"a": '}])
    chunks = await play(model.model(), [USER])
    assert "".join(c.arguments for c in chunks if isinstance(c, ToolCallChunk)) == '{"a": '


async def test_short_arguments_still_start_with_the_id_and_name() -> None:
    model = ScriptBuilder().turn(tool_calls=[{"id": "e", "name": "now", "arguments": {}}])
    chunks = await play(model.model(), [USER])
    assert [c for c in chunks if isinstance(c, ToolCallChunk)] == [
        ToolCallChunk(0, "e", "now", ""),
        ToolCallChunk(0, arguments="{"),
        ToolCallChunk(0, arguments="}"),
    ]


async def test_echo_streams_back_the_newest_user_message_word_by_word() -> None:
    model = ScriptBuilder().echo().model()
    messages = [
        Message("user", "old"),
        Message("tool", "x", call_id="c", name="t"),
        Message("user", "  say  this\tback "),
    ]
    chunks = await play(model, messages)
    texts = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert texts == ["  say", "  this", "\tback "]
    assert "".join(texts) == "  say  this\tback "
    assert chunks[-1] == Finish("stop", Usage(input_tokens=5, output_tokens=3))


async def test_usage_counts_words_of_every_message() -> None:
    model = ScriptBuilder().turn().turn(tokens=["a", "b"]).model()
    messages = [
        Message("user", "one two"),
        Message("assistant", "three", tool_calls=(ToolCallRecord("c", "t", {}, "{}"),)),
        Message("tool", "four five six", call_id="c", name="t"),
    ]
    assert (await play(model, messages))[-1] == Finish("stop", Usage(6, 2))


async def test_delay_sleeps_between_chunks_only(autojump_clock: trio.testing.MockClock) -> None:
    model = (
        ScriptBuilder()
        .turn(
            tokens=["a", "b", "c"],
            delay=0.5,
            tool_calls=[{"id": "x", "name": "t", "arguments": {"k": 1}}],
        )
        .model()
    )
    times: list[float] = []
    start = trio.current_time()
    with trio.fail_after(100):
        async for _ in model.stream([USER], []):
            times.append(trio.current_time() - start)
    # 3 tokens, 3 argument fragments, then Finish: a sleep before each but the first.
    assert times == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5, 2.5])


async def test_no_delay_means_no_checkpoint() -> None:
    model = ScriptBuilder().turn(tokens=["a", "b"]).model()
    with trio.CancelScope() as scope:
        scope.cancel()  # any checkpoint would raise Cancelled
        chunks = [chunk async for chunk in model.stream([USER], [])]
    assert len(chunks) == 3


async def test_a_delayed_stream_can_be_cancelled_and_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = ScriptBuilder().turn(tokens=["a"] * 10, delay=1.0).model()
    seen: list[Chunk] = []
    with trio.move_on_after(2.5):
        async for chunk in model.stream([USER], []):
            seen.append(chunk)
    assert seen == [TextDelta("a")] * 3


# ---- the builder and validation -------------------------------------------------------


def test_builder_builds_json_data_and_is_immutable() -> None:
    base = ScriptBuilder().turn(tokens=["Hi"])
    longer = base.echo(delay=0.1)
    assert base.build() == {"turns": [{"tokens": ["Hi"], "delay": 0.0, "tool_calls": []}]}
    assert longer.build() == {
        "turns": [{"tokens": ["Hi"], "delay": 0.0, "tool_calls": []}, {"echo": True, "delay": 0.1}]
    }
    assert orjson.loads(orjson.dumps(longer.build())) == longer.build()


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ([], r"a script must be an object with 'turns', got \[\]"),
        ({"turns": {}}, r"the script's 'turns' must be a list, got \{\}"),
        ({"turns": [], "extra": 1}, r"the script: unknown field 'extra'; expected one of 'turns'"),
        ({"turns": [{}, "x"]}, r"turn 1 must be an object, got 'x'"),
        ({"turns": [{"tokens": "abc"}]}, r"turn 0: 'tokens' must be a list of strings, got 'abc'"),
        ({"turns": [{"tokens": ["a", 3]}]}, r"turn 0: 'tokens'\[1\] must be a string, got 3"),
        (
            {"turns": [{"delay": -1}]},
            rf"turn 0: 'delay' must be a number of seconds from 0 to {MAX_DELAY:g}, got -1",
        ),
        (
            {"turns": [{"delay": True}]},
            rf"turn 0: 'delay' must be a number of seconds from 0 to {MAX_DELAY:g}, got True",
        ),
        (
            {"turns": [{"tokns": []}]},
            r"turn 0: unknown field 'tokns'; expected one of 'delay', 'tokens', 'tool_calls'",
        ),
        ({"turns": [{}, {"echo": False}]}, r"turn 1: 'echo' must be true, got False"),
        (
            {"turns": [{"echo": True, "tokens": []}]},
            r"turn 0 \(an echo turn\): unknown field 'tokens'; expected one of 'delay', 'echo'",
        ),
        (
            {"turns": [{"tool_calls": [{"id": "a", "arguments": {}}]}]},
            r"turn 0: 'tool_calls'\[0\]: 'name' must be a non-empty string, got None",
        ),
        (
            {"turns": [{"tool_calls": [{"name": "t", "id": 7}]}]},
            r"turn 0: 'tool_calls'\[0\]: 'id' must be a non-empty string, got 7",
        ),
        (
            {"turns": [{"tool_calls": [{"name": "t", "arguments": [1]}]}]},
            r"turn 0: 'tool_calls'\[0\]: 'arguments' must be an object \(or a string of raw JSON "
            r"text\), got \[1\]",
        ),
        (
            {"turns": [{"tool_calls": [{"name": "t", "id": "a"}, {"name": "u", "id": "a"}]}]},
            r"turn 0: two tool calls have the id 'a'",
        ),
        (
            {"turns": [{"tool_calls": [{"name": "t", "args": {}}]}]},
            r"turn 0: 'tool_calls'\[0\]: unknown field 'args'; expected one of 'arguments', 'id', "
            r"'name'",
        ),
    ],
)
def test_invalid_scripts_are_refused_naming_turn_and_field(script: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=f"^{message}$"):
        ScriptedModel(script)


def test_the_builder_checks_each_turn_as_it_is_added() -> None:
    with pytest.raises(
        ScriptError,
        match=r"^turn 1: 'tool_calls'\[0\]: 'name' must be a "
        r"non-empty string, got ''$",
    ):
        ScriptBuilder().echo().turn(tool_calls=[{"name": ""}])


def test_from_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_bytes(orjson.dumps(ScriptBuilder().turn(tokens=["x"]).build()))
    assert ScriptedModel.from_file(good).turns == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"turns": [')
    with pytest.raises(ScriptError, match=rf"^script file '{bad}' is not valid JSON: "):
        ScriptedModel.from_file(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"turns": [{"echo": 1}]}')
    with pytest.raises(
        ScriptError,
        match=rf"^script file '{wrong}': turn 0: 'echo' must be "
        r"true, got 1$",
    ):
        ScriptedModel.from_file(wrong)
    with pytest.raises(FileNotFoundError):
        ScriptedModel.from_file(tmp_path / "missing.json")


async def test_the_demo_script(autojump_clock: trio.testing.MockClock) -> None:
    model = ScriptedModel.demo()
    assert model.turns == 4
    first = await play(model, [Message("user", "show me")])
    calls = [c for c in first if isinstance(c, ToolCallChunk)]
    assert (calls[0].call_id, calls[0].name) == ("call_calc_1", "calculator")
    arguments = orjson.loads("".join(c.arguments for c in calls))
    assert arguments == {"expression": "(2+3)*7"}
    convo = [Message("user", "show me"), assistant("x"), Message("tool", "35")]
    second = await play(model, convo)
    calls = [c for c in second if isinstance(c, ToolCallChunk)]
    assert calls[0].name == "sleep"
    assert orjson.loads("".join(c.arguments for c in calls)) == {"seconds": 3}
    # The rest of the script belongs to the demo's narrative (trio_agent/cli/demo.py); it
    # has an echo turn, and the model plays exactly the packaged file.
    packaged = resources.files("trio_agent").joinpath("scripts", "demo.json").read_bytes()
    assert model.script == orjson.loads(packaged)
    assert any(turn.get("echo") for turn in model.script["turns"])
