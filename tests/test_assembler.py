"""The sans-I/O tool-call assembler: synchronous tests, no event loop."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_agent._core.assembler import (
    MAX_ARGUMENTS_CHARS,
    MAX_CALLS,
    ArgumentsDelta,
    AssemblerError,
    CallCut,
    CallReady,
    CallStarted,
    Fact,
    ToolCallAssembler,
)
from trio_agent.models import ToolCallChunk, ToolCallEnd

Input = ToolCallChunk | ToolCallEnd


def run(inputs: list[Input], *, end: str = "finish", prefix: str = "gen_") -> list[Fact]:
    assembler = ToolCallAssembler(prefix)
    facts: list[Fact] = []
    for chunk in inputs:
        facts.extend(assembler.feed(chunk))
    facts.extend(assembler.finish() if end == "finish" else assembler.cut())
    return facts


def ready(facts: list[Fact]) -> dict[str, CallReady]:
    return {f.call_id: f for f in facts if isinstance(f, CallReady)}


def test_one_call_streamed_in_fragments() -> None:
    facts = run(
        [
            ToolCallChunk(0, "c1", "calculator", '{"expr'),
            ToolCallChunk(0, arguments='ession": "1+'),
            ToolCallChunk(0, arguments='1"}'),
        ]
    )
    assert facts == [
        CallStarted("c1", "calculator"),
        ArgumentsDelta("c1", '{"expr'),
        ArgumentsDelta("c1", 'ession": "1+'),
        ArgumentsDelta("c1", '1"}'),
        CallReady("c1", "calculator", '{"expression": "1+1"}', {"expression": "1+1"}, None),
    ]


def test_empty_arguments_mean_an_empty_object_and_empty_fragments_make_no_fact() -> None:
    facts = run([ToolCallChunk(0, "c1", "now", ""), ToolCallChunk(0, arguments="")])
    assert facts == [CallStarted("c1", "now"), CallReady("c1", "now", "", {}, None)]


def test_fragments_before_the_name_are_held_then_emitted_as_one_delta() -> None:
    assembler = ToolCallAssembler("gen_")
    assert assembler.feed(ToolCallChunk(0, "c1", None, '{"a"')) == []
    assert assembler.feed(ToolCallChunk(0, arguments=": ")) == []
    assert assembler.feed(ToolCallChunk(0, name="t", arguments="1")) == [
        CallStarted("c1", "t"),
        ArgumentsDelta("c1", '{"a": 1'),
    ]
    assert assembler.feed(ToolCallChunk(0, arguments="}")) == [ArgumentsDelta("c1", "}")]
    assert assembler.finish() == [CallReady("c1", "t", '{"a": 1}', {"a": 1}, None)]


def test_a_call_without_provider_id_gets_one_from_the_prefix_and_its_position() -> None:
    facts = run(
        [
            ToolCallChunk(0, "p1", "a", "{}"),
            ToolCallChunk(1, None, "b", "{}"),
            ToolCallChunk(None, None, "c", "{}"),
        ],
        prefix="call_r1s2_",
    )
    started = [f for f in facts if isinstance(f, CallStarted)]
    assert started == [
        CallStarted("p1", "a"),
        CallStarted("call_r1s2_2", "b"),
        CallStarted("call_r1s2_3", "c"),
    ]


def test_default_prefix() -> None:
    assembler = ToolCallAssembler()
    assert assembler.feed(ToolCallChunk(None, None, "t", "")) == [
        CallStarted("call_1", "t"),
        CallReady("call_1", "t", "", {}, None),
    ]


def test_whole_call_with_no_index_completes_at_once() -> None:
    assembler = ToolCallAssembler("gen_")
    assert assembler.feed(ToolCallChunk(None, "w1", "sleep", '{"seconds": 1}')) == [
        CallStarted("w1", "sleep"),
        ArgumentsDelta("w1", '{"seconds": 1}'),
        CallReady("w1", "sleep", '{"seconds": 1}', {"seconds": 1}, None),
    ]
    assert assembler.open_calls == ()
    assert assembler.finish() == []


def test_tool_call_end_completes_its_call_before_the_stream_ends() -> None:
    assembler = ToolCallAssembler("gen_")
    assembler.feed(ToolCallChunk(0, "a", "x", '{"n": 1}'))
    assembler.feed(ToolCallChunk(1, "b", "y", '{"n": 2'))
    assert assembler.feed(ToolCallEnd(0)) == [CallReady("a", "x", '{"n": 1}', {"n": 1}, None)]
    assert assembler.open_calls == (1,)
    assembler.feed(ToolCallChunk(1, arguments="}"))
    assert assembler.finish() == [CallReady("b", "y", '{"n": 2}', {"n": 2}, None)]


def test_finish_completes_open_calls_in_the_order_first_seen() -> None:
    facts = run(
        [
            ToolCallChunk(5, "late-index-first", "x", "{}"),
            ToolCallChunk(0, "early-index-second", "y", "{}"),
        ]
    )
    assert [f.call_id for f in facts if isinstance(f, CallReady)] == [
        "late-index-first",
        "early-index-second",
    ]


def test_invalid_json_is_an_error_with_the_parser_message() -> None:
    [fact] = ready(run([ToolCallChunk(0, "c1", "calculator", '{"expression" "2"}')])).values()
    assert fact.arguments is None
    assert fact.raw_arguments == '{"expression" "2"}'
    assert fact.error == (
        "arguments of tool call 'c1' (calculator) are not valid JSON: "
        "unexpected character, expected ':' after key at char 14"
    )


def test_truncated_json_is_an_error() -> None:
    [fact] = ready(run([ToolCallChunk(0, "c1", "calculator", '{"expression": "2')])).values()
    assert fact.error == (
        "arguments of tool call 'c1' (calculator) are not valid JSON: "
        "unexpected end of data at char 17"
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[1, 2]", "an array"),
        ('"x"', "a string"),
        ("3", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ],
)
def test_json_that_is_not_an_object_is_an_error(text: str, kind: str) -> None:
    [fact] = ready(run([ToolCallChunk(0, "c1", "t", text)])).values()
    assert (fact.arguments, fact.error) == (
        None,
        f"arguments of tool call 'c1' (t) are not a JSON object: got {kind}",
    )


def test_a_call_that_never_gets_a_name_starts_nameless_and_ends_in_error() -> None:
    facts = run([ToolCallChunk(0, "c1", None, '{"a": 1}')])
    assert facts == [
        CallStarted("c1", ""),
        ArgumentsDelta("c1", '{"a": 1}'),
        CallReady("c1", "", '{"a": 1}', None, "tool call 'c1' has no tool name"),
    ]


def test_cut_ends_every_open_call_and_nothing_else() -> None:
    assembler = ToolCallAssembler("gen_")
    assembler.feed(ToolCallChunk(0, "a", "x", '{"n": 1}'))
    assembler.feed(ToolCallEnd(0))
    assembler.feed(ToolCallChunk(1, "b", "y", '{"n"'))
    assembler.feed(ToolCallChunk(2, None, None, '{"m'))  # no name yet: starts at the cut
    assert assembler.cut() == [
        CallCut("b", "y", '{"n"'),
        CallStarted("gen_3", ""),
        ArgumentsDelta("gen_3", '{"m'),
        CallCut("gen_3", "", '{"m'),
    ]
    assert assembler.state == "cut"
    assert assembler.cut() == []  # cleanup may run twice


def test_every_call_reads_started_deltas_then_one_end() -> None:
    facts = run(
        [
            ToolCallChunk(0, None, None, "{"),
            ToolCallChunk(1, "b", "y", "{"),
            ToolCallChunk(0, "a", "x", "}"),
            ToolCallEnd(1),
            ToolCallChunk(None, "w", "z", "{}"),
        ],
        end="cut",
    )
    by_call: dict[str, list[type]] = {}
    for fact in facts:
        by_call.setdefault(fact.call_id, []).append(type(fact))
    for kinds in by_call.values():
        assert kinds[0] is CallStarted
        assert kinds[-1] in (CallReady, CallCut)
        assert set(kinds[1:-1]) <= {ArgumentsDelta}
    assert set(by_call) == {"a", "b", "w"}


# ---- illegal inputs raise, exactly, and change nothing ---------------------------------

LEGAL: list[Input] = [
    ToolCallChunk(0, "a", "x", '{"n": '),
    ToolCallChunk(1, "b", "y", "{}"),
    ToolCallEnd(1),
]
REST: list[Input] = [ToolCallChunk(0, arguments="1}")]


def assembler_after(inputs: list[Input]) -> tuple[ToolCallAssembler, list[Fact]]:
    assembler = ToolCallAssembler("gen_")
    facts: list[Fact] = []
    for chunk in inputs:
        facts.extend(assembler.feed(chunk))
    return assembler, facts


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            ToolCallChunk(1, arguments="x"),
            r"^can't feed a ToolCallChunk for tool call at index 1 \('b'\): it is complete$",
        ),
        (ToolCallEnd(1), r"^can't end for tool call at index 1 \('b'\): it is complete$"),
        (
            ToolCallEnd(7),
            r"^can't feed ToolCallEnd for tool call at index 7: no such call started$",
        ),
        (
            ToolCallChunk(0, call_id="other"),
            r"^can't change the id of tool call at index 0 \('a'\) from 'a' to 'other'$",
        ),
        (
            ToolCallChunk(0, name="z"),
            r"^can't change the name of tool call at index 0 \('a'\) from 'x' to 'z'$",
        ),
        (
            ToolCallChunk(2, "a", "x", "{}"),
            r"^can't start tool call at index 2 \('a'\) as 'a': a call with that id already "
            r"started$",
        ),
        (
            ToolCallChunk(None, "b", "y", "{}"),
            r"^can't start tool call with no index \('b'\) as 'b': a call with that id already "
            r"started$",
        ),
    ],
)
def test_illegal_input_raises_and_leaves_the_state_unchanged(bad: Input, message: str) -> None:
    assembler, facts = assembler_after(LEGAL)
    with pytest.raises(AssemblerError, match=message):
        assembler.feed(bad)
    # Carrying on gives exactly what it gives without the illegal input.
    for chunk in REST:
        facts.extend(assembler.feed(chunk))
    facts.extend(assembler.finish())
    assert facts == run(LEGAL + REST)


def test_repeating_the_same_id_and_name_is_not_a_conflict() -> None:
    facts = run([ToolCallChunk(0, "a", "x", "{"), ToolCallChunk(0, "a", "x", "}")])
    assert facts[-1] == CallReady("a", "x", "{}", {}, None)


def test_feeding_or_finishing_after_the_end_raises() -> None:
    assembler, _ = assembler_after(LEGAL)
    assembler.finish()
    finished = r"^can't feed ToolCallChunk: the stream has finished$"
    with pytest.raises(AssemblerError, match=finished):
        assembler.feed(ToolCallChunk(0, arguments="1"))
    with pytest.raises(AssemblerError, match=r"^can't finish: the stream has finished$"):
        assembler.finish()
    assert assembler.cut() == []
    assert assembler.state == "finished"
    cut = ToolCallAssembler()
    cut.cut()
    with pytest.raises(AssemblerError, match=r"^can't feed ToolCallEnd: the stream was cut$"):
        cut.feed(ToolCallEnd(0))
    with pytest.raises(AssemblerError, match=r"^can't finish: the stream was cut$"):
        cut.finish()


def test_feeding_something_else_raises() -> None:
    with pytest.raises(AssemblerError, match=r"^can't feed str: not a tool-call chunk$"):
        ToolCallAssembler().feed("hello")  # type: ignore[arg-type]


def test_argument_text_is_bounded() -> None:
    assembler = ToolCallAssembler()
    assembler.feed(ToolCallChunk(0, "a", "x", "x" * (MAX_ARGUMENTS_CHARS - 1)))
    with pytest.raises(
        AssemblerError,
        match=rf"^can't add 2 characters to the arguments of tool call at index 0 \('a'\): "
        rf"they would pass {MAX_ARGUMENTS_CHARS} characters \(MAX_ARGUMENTS_CHARS\)$",
    ):
        assembler.feed(ToolCallChunk(0, arguments="yy"))
    assert assembler.feed(ToolCallChunk(0, arguments="y")) == [ArgumentsDelta("a", "y")]


def test_number_of_calls_is_bounded() -> None:
    assembler = ToolCallAssembler()
    for i in range(MAX_CALLS):
        assembler.feed(ToolCallChunk(i, f"c{i}", "x", "{}"))
    with pytest.raises(
        AssemblerError,
        match=rf"^can't start a tool call with no index: the stream already made {MAX_CALLS} "
        r"tool calls \(MAX_CALLS\)$",
    ):
        assembler.feed(ToolCallChunk(None, "w", "x", "{}"))
    assert len(assembler.finish()) == MAX_CALLS


# ---- property: fragmentation and interleaving don't change the result ------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=5)


@st.composite
def split(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=8)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def two_streamed_calls(draw: st.DrawFn) -> tuple[list[Input], dict[str, Any], dict[str, Any]]:
    args_a, args_b = draw(json_objects), draw(json_objects)
    text_a, text_b = orjson.dumps(args_a).decode(), orjson.dumps(args_b).decode()
    pieces_a, pieces_b = draw(split(text_a)), draw(split(text_b))
    # The id and name ride on the first chunk, or on a later one (then earlier
    # fragments are held back).
    header_a = draw(st.integers(0, len(pieces_a) - 1))
    chunks_a = [
        ToolCallChunk(0, "a", "alpha", p) if i == header_a else ToolCallChunk(0, arguments=p)
        for i, p in enumerate(pieces_a)
    ]
    chunks_b: list[Input] = [ToolCallChunk(1, "b", "beta", pieces_b[0])]
    chunks_b += [ToolCallChunk(1, arguments=p) for p in pieces_b[1:]]
    if draw(st.booleans()):
        chunks_b.append(ToolCallEnd(1))
    # Any interleaving that keeps each call's own order.
    order = draw(st.permutations([0] * len(chunks_a) + [1] * len(chunks_b)))
    streams: list[list[Input]] = [list(chunks_a), chunks_b]
    merged = [streams[which].pop(0) for which in order]
    return merged, args_a, args_b


@settings(max_examples=300)
@given(two_streamed_calls())
def test_any_split_and_interleaving_gives_the_same_arguments(
    case: tuple[list[Input], dict[str, Any], dict[str, Any]],
) -> None:
    chunks, args_a, args_b = case
    facts = run(chunks)
    calls = ready(facts)
    assert calls["a"] == CallReady("a", "alpha", orjson.dumps(args_a).decode(), args_a, None)
    assert calls["b"] == CallReady("b", "beta", orjson.dumps(args_b).decode(), args_b, None)
    # The deltas of each call, in order, are exactly its text.
    for call_id in ("a", "b"):
        deltas = [f.delta for f in facts if isinstance(f, ArgumentsDelta) and f.call_id == call_id]
        assert "".join(deltas) == calls[call_id].raw_arguments
        assert all(deltas)
    # Determinism: the same chunks give the same facts.
    assert run(chunks) == facts


def test_two_hundred_thousand_one_character_fragments_assemble_exactly() -> None:
    # A coding agent writing a large file through a tool call streams its arguments in
    # tiny deltas; assembly is linear, and the text comes out exactly as streamed.
    content = "".join(chr(ord("a") + i % 26) for i in range(200_000 - 19))
    text = '{"path":"x","c":"' + content + '"}'
    assert len(text) == 200_000
    assembler = ToolCallAssembler()
    facts = assembler.feed(ToolCallChunk(0, "w", "write", ""))
    for ch in text:
        facts.extend(assembler.feed(ToolCallChunk(0, arguments=ch)))
    facts.extend(assembler.finish())
    deltas = [f.delta for f in facts if isinstance(f, ArgumentsDelta)]
    assert len(deltas) == 200_000 and "".join(deltas) == text
    assert facts[-1] == CallReady("w", "write", text, {"path": "x", "c": content}, None)


def test_a_refused_fragment_after_many_leaves_the_call_as_it_was() -> None:
    # The shared parts of a long call are not changed by a chunk that is refused.
    assembler = ToolCallAssembler()
    assembler.feed(ToolCallChunk(0, "a", "x", '{"k": "'))
    for _ in range(1000):
        assembler.feed(ToolCallChunk(0, arguments="y"))
    with pytest.raises(AssemblerError, match=r"^can't change the name"):
        assembler.feed(ToolCallChunk(0, name="z", arguments="NOT THIS"))
    with pytest.raises(AssemblerError, match=r"^can't start tool call at index 1"):
        assembler.feed(ToolCallChunk(1, "a", "x", "NOR THIS"))
    assembler.feed(ToolCallChunk(0, arguments='"}'))
    assert assembler.finish()[-1] == CallReady(
        "a", "x", '{"k": "' + "y" * 1000 + '"}', {"k": "y" * 1000}, None
    )
