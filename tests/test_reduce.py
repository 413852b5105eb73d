"""The reducer, tested synchronously with no event loop (it is sans-I/O)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_agent import State, Text, initial_state, reduce
from trio_agent import events as ev
from trio_agent._core.reduce import replay
from trio_agent.errors import ReduceError
from trio_agent.models import Message, ToolCallRecord, Usage

# ---- a generator of legal event logs -----------------------------------------------------

texts = st.text(max_size=8) | st.sampled_from(["", "é", "🎉", "👩‍👩‍👧‍👦"])


@st.composite
def tool_call_events(draw: st.DrawFn, run: int, step: int, call_id: str) -> list[ev.Event]:
    """One tool call from start to result: parsed arguments, or arguments that never
    parse (ended by an ``error`` result with no ``tool_call``)."""
    name = draw(st.sampled_from(["calculator", "sleep", "search"]))
    out: list[ev.Event] = [ev.ToolCallStart(run=run, step=step, call_id=call_id, name=name)]
    for delta in draw(st.lists(st.sampled_from(['{"x"', ": 1", "}", "é", "{bad"]), max_size=3)):
        out.append(ev.ToolCallDelta(run=run, step=step, call_id=call_id, delta=delta))
    outcome = draw(st.sampled_from(["ok", "error", "timeout", "cancelled", "invalid"]))
    if outcome == "invalid":
        out.append(
            ev.ToolResult(
                run=run,
                step=step,
                call_id=call_id,
                status="error",
                error="invalid arguments: expected a JSON object",
            )
        )
        return out
    out.append(ev.ToolCall(run=run, step=step, call_id=call_id, name=name, arguments={"x": 1}))
    for i in range(draw(st.integers(0, 2))):  # a running call may report how far it got
        out.append(
            ev.ToolProgress(run=run, step=step, call_id=call_id, progress=i, total=2, message="…")
        )
    result = draw(
        st.none()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON (orjson) carries
        | texts
        | st.just({"rows": [1, {"a": "b"}]})
    )
    out.append(
        ev.ToolResult(
            run=run,
            step=step,
            call_id=call_id,
            status=outcome,
            result=result if outcome == "ok" else None,
            error=None if outcome == "ok" else f"{outcome}!",
        )
    )
    return out


@st.composite
def step_events(draw: st.DrawFn, run: int, step: int) -> list[ev.Event]:
    """A step's body: tokens, reasoning, steering, errors, tool calls (interleaved)."""
    out: list[ev.Event] = []
    calls: list[list[ev.Event]] = []
    for i in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["token", "token", "reasoning", "steer", "error", "call"]))
        if kind == "token":
            out.append(ev.TokenStream(run=run, step=step, text=draw(texts)))
        elif kind == "reasoning":
            out.append(ev.Reasoning(run=run, step=step, text=draw(texts)))
        elif kind == "steer":
            out.append(ev.UserInput(run=run, step=step, text=draw(texts)))
        elif kind == "error":
            out.append(
                ev.Error(run=run, step=step, code="rate_limit", message="slow down", retryable=True)
            )
        else:
            calls.append(draw(tool_call_events(run, step, f"c{run}.{step}.{i}")))
    # Interleave the calls' events with each other, each call in its own order.
    while calls:
        index = draw(st.integers(0, len(calls) - 1))
        out.append(calls[index].pop(0))
        if not calls[index]:
            calls.pop(index)
    return out


@st.composite
def event_logs(draw: st.DrawFn) -> list[ev.Event]:
    """A legal log: runs of steps, ended by done, or interrupted then resumed/cancelled.
    The last run may be left half-way (a live session)."""
    log: list[ev.Event] = []
    for run in range(1, draw(st.integers(1, 3)) + 1):
        for _ in range(draw(st.integers(0, 2))):
            log.append(ev.UserInput(run=run - 1, text=draw(texts)))
        log.append(ev.RunStarted(run=run))
        step = 0
        ended = False
        while not ended:
            step += 1
            log.append(ev.Thinking(run=run, step=step))
            log.extend(draw(step_events(run, step)))
            end = draw(
                st.sampled_from(["next", "next", "interrupt", "completed", "failed", "cut_short"])
                if step < 4
                else st.sampled_from(["completed", "failed", "interrupt"])
            )
            if end == "cut_short":
                return log
            if end == "next":
                continue
            if end == "interrupt":
                mode = draw(st.sampled_from(["soft", "hard"]))
                if draw(st.booleans()):
                    log.append(ev.Interrupt(run=run, step=step, mode=mode, reason="stop"))
                log.append(ev.Interrupted(run=run, step=step, mode=mode, reason="stop"))
                for _ in range(draw(st.integers(0, 2))):
                    log.append(ev.UserInput(run=run, step=step, text=draw(texts)))
                then = draw(st.sampled_from(["resume", "resume_plain", "cancel"]))
                if then == "cancel":
                    log.append(ev.Done(run=run, step=step, status="cancelled"))
                    ended = True
                else:
                    instruction = draw(texts) if then == "resume" else None
                    log.append(ev.Resume(run=run, step=step, instruction=instruction))
                continue
            if end == "failed":
                log.append(ev.Error(run=run, step=step, code="model", message="boom"))
            log.append(
                ev.Done(
                    run=run,
                    step=step,
                    status=end,
                    text="answer",
                    usage={"input_tokens": step, "output_tokens": 2 * step},
                )
            )
            ended = True
    return log


def stamped(log: list[ev.Event]) -> list[ev.Event]:
    """The log as ``publish`` stamps it: session and seq 1, 2, 3, …"""
    return [_with(e, session="s1", seq=i) for i, e in enumerate(log, 1)]


def _with(event: ev.Event, **changes: Any) -> ev.Event:
    fields = {f.name: getattr(event, f.name) for f in attrs.fields(type(event))}
    return type(event)(**{**fields, **changes})


def fold(log: list[ev.Event], state: State | None = None) -> State:
    state = initial_state("s1") if state is None else state
    for event in log:
        state = reduce(state, event)
    return state


# ---- replay equals live --------------------------------------------------------------------


@given(event_logs())
def test_replay_of_every_prefix_equals_live_state(raw: list[ev.Event]) -> None:
    log = stamped(raw)
    live = [initial_state("s1")]
    for event in log:
        live.append(reduce(live[-1], event))
    for k in range(len(log) + 1):
        again = replay(log[:k], initial_state("s1"))
        assert again == live[k], k
        assert again.to_dict() == live[k].to_dict(), k
    final = live[-1]
    assert final.seq == len(log)
    # No user message is lost: each is in the conversation, or pending for the next step.
    said = [e.text for e in log if isinstance(e, ev.UserInput)] + [
        e.instruction for e in log if isinstance(e, ev.Resume) and e.instruction is not None
    ]
    heard = [m.content for m in final.messages if m.role == "user"]
    assert sorted(heard + list(final.pending_inputs)) == sorted(said)
    # Every tool call of a closed step has its tool message, after its assistant message.
    tool_messages = [m for m in final.messages if m.role == "tool"]
    recorded = [c for m in final.messages if m.role == "assistant" for c in m.tool_calls]
    assert [m.call_id for m in tool_messages] == [c.call_id for c in recorded]


@given(event_logs(), st.data())
def test_branching_from_an_old_state_does_not_disturb_newer_ones(
    raw: list[ev.Event], data: st.DataObject
) -> None:
    # Text shares one append-only list between successive values; a branch from an
    # older value must copy, never overwrite what the newer values own.
    log = stamped(raw)
    live = [initial_state("s1")]
    for event in log:
        live.append(reduce(live[-1], event))
    running = [k for k, s in enumerate(live) if s.running and s.step_open]
    if not running:
        return
    k = data.draw(st.sampled_from(running))
    branch = reduce(live[k], ev.TokenStream(run=live[k].run, text="<branch>"))
    assert str(branch.text) == str(live[k].text) + "<branch>"
    for j, state in enumerate(live):
        assert state == replay(log[:j], initial_state("s1")), j


# ---- text is built in amortized O(1) per token ------------------------------------------------


def _started() -> State:
    return fold([ev.RunStarted(run=1, seq=1), ev.Thinking(run=1, step=1, seq=2)])


@pytest.mark.timeout(20)
def test_two_hundred_thousand_tokens_build_the_text_linearly() -> None:
    # Quadratic string building would copy ~2·10¹⁰ characters here and time out.
    state = _started()
    token = ev.TokenStream(run=1, step=1, seq=3, text="a")
    for _ in range(200_000):
        state = reduce(state, token)
    assert str(state.text) == "a" * 200_000
    assert state.to_dict()["text"] == "a" * 200_000
    state = reduce(state, ev.Done(run=1, step=1, seq=4, status="completed"))
    assert state.messages[-1] == Message("assistant", "a" * 200_000)


@pytest.mark.timeout(20)
def test_two_hundred_thousand_argument_fragments_build_linearly() -> None:
    state = reduce(_started(), ev.ToolCallStart(run=1, step=1, call_id="c1", name="calc"))
    delta = ev.ToolCallDelta(run=1, step=1, call_id="c1", delta="7")
    for _ in range(200_000):
        state = reduce(state, delta)
    call = state.call("c1")
    assert call is not None
    assert str(call.arguments_text) == "7" * 200_000


def test_text_has_str_value_semantics() -> None:
    a = Text().append("ab")
    b = a.append("c")
    c = a.append("X")  # a branch from an older value
    assert (str(a), str(b), str(c)) == ("ab", "abc", "abX")
    assert a == "ab" and b == Text().append("a").append("bc") and b != c
    assert hash(b) == hash("abc")
    assert repr(c) == "Text('abX')"
    assert str(Text()) == ""


# ---- transitions ---------------------------------------------------------------------------

# Reaching each status with a short legal log.
SETUPS: dict[str, list[ev.Event]] = {
    "idle": [],
    "thinking": [ev.RunStarted(run=1), ev.Thinking(run=1, step=1)],
    "acting": [
        ev.RunStarted(run=1),
        ev.Thinking(run=1, step=1),
        ev.ToolCallStart(run=1, step=1, call_id="c1", name="calc"),
        ev.ToolCall(run=1, step=1, call_id="c1", name="calc", arguments={}),
    ],
    "interrupted": [
        ev.RunStarted(run=1),
        ev.Thinking(run=1, step=1),
        ev.Interrupted(run=1, step=1, mode="soft"),
    ],
    "done": [ev.RunStarted(run=1), ev.Thinking(run=1, step=1), ev.Done(run=1, status="completed")],
    "error": [ev.RunStarted(run=1), ev.Thinking(run=1, step=1), ev.Done(run=1, status="failed")],
}

# One instance of each event type (fields irrelevant: the status alone rules these out).
ONE_OF_EACH: dict[str, ev.Event] = {
    "user_input": ev.UserInput(text="x"),
    "run_started": ev.RunStarted(run=2),
    "thinking": ev.Thinking(run=1, step=2),
    "token_stream": ev.TokenStream(text="x"),
    "reasoning": ev.Reasoning(text="x"),
    "model_finished": ev.ModelFinished(finish_reason="stop"),
    "tool_call_start": ev.ToolCallStart(call_id="c9", name="calc"),
    "tool_call_delta": ev.ToolCallDelta(call_id="c1", delta="{"),
    "tool_call": ev.ToolCall(call_id="c1", name="calc", arguments={}),
    "tool_approval_requested": ev.ToolApprovalRequested(call_id="c1", name="calc", arguments={}),
    "tool_approval": ev.ToolApproval(call_id="c1", approved=True),
    "tool_progress": ev.ToolProgress(call_id="c1", progress=1),
    "tool_result": ev.ToolResult(call_id="c1", status="ok"),
    "interrupt": ev.Interrupt(mode="hard"),
    "interrupted": ev.Interrupted(mode="hard"),
    "resume": ev.Resume(),
    "error": ev.Error(code="x", message="y"),
    "done": ev.Done(status="completed"),
    "state": ev.StateSnapshot(state={}),
}

RUNNING = {"thinking", "acting"}
# The contract (DESIGN §1-§3), written out independently of the reducer's own table.
LEGAL_IN: dict[str, set[str]] = {
    "user_input": set(SETUPS),
    "error": set(SETUPS),
    "run_started": {"idle", "done", "error"},
    "resume": {"interrupted"},
    "done": RUNNING | {"interrupted"},
    "state": set(),
    **{
        kind: RUNNING
        for kind in [
            "thinking",
            "token_stream",
            "reasoning",
            "model_finished",
            "tool_call_start",
            "tool_call_delta",
            "tool_call",
            "tool_approval_requested",
            "tool_approval",
            "tool_progress",
            "tool_result",
            "interrupt",
            "interrupted",
        ]
    },
}


def test_setups_reach_their_status() -> None:
    for status, log in SETUPS.items():
        assert fold(log).status == status
    assert set(ONE_OF_EACH) == set(LEGAL_IN) == set(ev.EVENT_TYPES)


def assert_rejected(state: State, event: ev.Event, message: str) -> None:
    """``reduce`` raises ReduceError with exactly ``message`` and changes nothing."""
    before = state
    snapshot = state.to_dict()
    with pytest.raises(ReduceError, match=f"^{message}$"):
        reduce(state, event)
    assert state is before
    assert state.to_dict() == snapshot


@pytest.mark.parametrize(
    ("status", "kind"),
    [(s, k) for k in sorted(LEGAL_IN) for s in SETUPS if s not in LEGAL_IN[k]],
)
def test_event_illegal_in_status(status: str, kind: str) -> None:
    state = fold(SETUPS[status])
    assert_rejected(state, ONE_OF_EACH[kind], f"can't apply '{kind}' event in state '{status}'")
    # The state still works: the same legal continuation as from a fresh replay.
    follow = ev.UserInput(text="after")
    assert reduce(state, follow) == fold([*SETUPS[status], follow])


START = [ev.RunStarted(run=1), ev.Thinking(run=1, step=1)]
C1 = ev.ToolCallStart(call_id="c1", name="calc")
C1_CALL = ev.ToolCall(call_id="c1", name="calc", arguments={"x": 1})
C1_OK = ev.ToolResult(call_id="c1", status="ok", result=2)


@pytest.mark.parametrize(
    ("log", "event", "message"),
    [
        ([], ev.RunStarted(run=2), r"run_started for run 2, expected run 1"),
        (SETUPS["done"], ev.RunStarted(run=1), r"run_started for run 1, expected run 2"),
        (START, ev.Thinking(run=1, step=1), r"thinking for step 1, expected step 2"),
        (START, ev.Thinking(run=1, step=3), r"thinking for step 3, expected step 2"),
        (
            START,
            ev.ToolCallDelta(call_id="zz", delta="{"),
            r"tool_call_delta for unknown tool call 'zz'",
        ),
        (
            START,
            ev.ToolCall(call_id="zz", name="n", arguments={}),
            r"tool_call for unknown tool call 'zz'",
        ),
        (
            START,
            ev.ToolResult(call_id="zz", status="ok"),
            r"tool_result for unknown tool call 'zz'",
        ),
        ([*START, C1], C1, r"tool_call_start for tool call 'c1', which already started"),
        (
            [*START, C1, C1_CALL],
            ev.ToolCallDelta(call_id="c1", delta="x"),
            r"tool_call_delta for tool call 'c1', which is running",
        ),
        ([*START, C1, C1_CALL], C1_CALL, r"tool_call for tool call 'c1', which is running"),
        ([*START, C1, C1_CALL, C1_OK], C1_OK, r"tool_result for tool call 'c1', which is ok"),
        ([*START, C1, C1_CALL, C1_OK], C1_CALL, r"tool_call for tool call 'c1', which is ok"),
        (
            START,
            ev.ToolProgress(call_id="zz", progress=1),
            r"tool_progress for unknown tool call 'zz'",
        ),
        (
            [*START, C1],
            ev.ToolProgress(call_id="c1", progress=1),
            r"tool_progress for tool call 'c1', which is streaming",
        ),
        (
            [*START, C1, C1_CALL, C1_OK],
            ev.ToolProgress(call_id="c1", progress=1),
            r"tool_progress for tool call 'c1', which is ok",
        ),
        (
            [*START, C1],
            ev.Done(status="completed"),
            r"done while tool calls \['c1'\] have no tool_result",
        ),
        (
            [*START, C1, C1_CALL, ev.ToolCallStart(call_id="c2", name="n")],
            ev.Done(status="cancelled"),
            r"done while tool calls \['c1', 'c2'\] have no tool_result",
        ),
        (
            [*START, C1, C1_CALL],
            ev.Interrupted(mode="hard"),
            r"interrupted while tool calls \['c1'\] have no tool_result",
        ),
    ],
)
def test_illegal_transition(log: list[ev.Event], event: ev.Event, message: str) -> None:
    assert_rejected(fold(stamped(log)), event, message)


@given(event_logs(), st.data())
def test_any_event_is_applied_or_rejected_cleanly(raw: list[ev.Event], data: st.DataObject) -> None:
    log = stamped(raw)
    k = data.draw(st.integers(0, len(log)))
    state = fold(log[:k])
    event = data.draw(st.sampled_from([*ONE_OF_EACH.values(), *log]))
    snapshot = state.to_dict()
    try:
        after = reduce(state, event)
    except ReduceError:
        assert state.to_dict() == snapshot
    else:
        assert after.seq == event.seq
        assert state.to_dict() == snapshot  # pure: the old value is untouched
    assert fold(log[:k]) == state


# ---- behaviour ---------------------------------------------------------------------------


def test_input_before_a_run_is_the_first_user_message() -> None:
    state = fold([ev.UserInput(text="what is 2+2?"), ev.RunStarted(run=1)])
    assert state.pending_inputs == ("what is 2+2?",)
    assert state.status == "thinking"
    state = reduce(state, ev.Thinking(run=1, step=1))
    assert state.messages == (Message("user", "what is 2+2?"),)
    assert state.pending_inputs == ()


def test_steering_input_enters_at_the_next_thinking() -> None:
    state = fold([ev.UserInput(text="hi"), *START, ev.TokenStream(text="Let me")])
    state = reduce(state, ev.UserInput(text="use the calculator"))
    assert state.pending_inputs == ("use the calculator",)
    assert [m.content for m in state.messages] == ["hi"]  # not yet in the model's input
    assert str(state.text) == "Let me"
    state = reduce(state, ev.UserInput(text="and be brief"))
    state = reduce(state, ev.Thinking(run=1, step=2))
    assert state.messages == (
        Message("user", "hi"),
        Message("assistant", "Let me"),
        Message("user", "use the calculator"),
        Message("user", "and be brief"),
    )
    assert state.pending_inputs == ()
    assert str(state.text) == ""


def test_hard_interrupted_marks_the_assistant_message_cut() -> None:
    state = fold([*START, ev.TokenStream(text="half an ans"), ev.Interrupt(mode="hard")])
    assert state.interrupting == "hard"
    state = reduce(state, ev.Interrupted(mode="hard", reason="wrong way"))
    assert state.status == "interrupted"
    assert state.interrupting is None
    assert state.messages[-1] == Message("assistant", "half an ans", cut=True)
    assert state.to_dict()["messages"][-1] == {
        "role": "assistant",
        "content": "half an ans",
        "cut": True,
    }


def test_hard_interrupt_with_no_text_still_records_the_cut() -> None:
    state = fold([*START, ev.Interrupted(mode="hard")])
    assert state.messages == (Message("assistant", "", cut=True),)


def test_soft_interrupted_keeps_the_message_whole_and_resume_adds_the_instruction() -> None:
    state = fold([*START, ev.TokenStream(text="done step"), ev.Interrupted(mode="soft")])
    assert state.messages == (Message("assistant", "done step"),)
    state = reduce(state, ev.Resume(instruction="use the calculator"))
    assert state.status == "thinking"
    assert state.pending_inputs == ("use the calculator",)
    state = reduce(state, ev.Thinking(run=1, step=2))
    assert state.messages[-1] == Message("user", "use the calculator")


def test_tool_calls_go_into_the_conversation() -> None:
    state = fold(
        [
            *START,
            ev.TokenStream(text="checking"),
            C1,
            ev.ToolCallDelta(call_id="c1", delta='{"x": '),
            ev.ToolCallDelta(call_id="c1", delta="1}"),
            C1_CALL,
            ev.ToolCallStart(call_id="c2", name="search"),
            ev.ToolCallDelta(call_id="c2", delta="{bad"),
            ev.ToolResult(call_id="c2", status="error", error="invalid arguments"),
        ]
    )
    assert state.status == "acting"
    assert [(c.call_id, c.status) for c in state.tool_calls] == [("c1", "running"), ("c2", "error")]
    state = reduce(state, ev.ToolResult(call_id="c1", status="ok", result={"value": 2}))
    state = reduce(state, ev.Thinking(run=1, step=2))
    assert state.status == "thinking"
    assert state.tool_calls == ()
    assert state.messages == (
        Message(
            "assistant",
            "checking",
            (
                ToolCallRecord("c1", "calc", {"x": 1}, '{"x": 1}'),
                ToolCallRecord("c2", "search", None, "{bad"),
            ),
        ),
        Message("tool", '{"value":2}', call_id="c1", name="calc", status="ok"),
        Message("tool", "invalid arguments", call_id="c2", name="search", status="error"),
    )


def test_done_records_usage_and_status() -> None:
    usage = {"input_tokens": 3, "output_tokens": 1}
    state = fold(
        [*START, ev.TokenStream(text="4"), ev.Done(status="completed", text="4", usage=usage)]
    )
    assert (state.status, state.usage, state.done_text) == ("done", Usage(3, 1), "4")
    assert state.messages == (Message("assistant", "4"),)
    failed = fold([*START, ev.Error(code="model", message="boom"), ev.Done(status="failed")])
    assert failed.status == "error"
    assert failed.error == ev.Error(code="model", message="boom")
    again = reduce(failed, ev.RunStarted(run=2))
    assert (again.status, again.run, again.step, again.error) == ("thinking", 2, 0, None)


def test_cancelled_while_interrupted_ends_the_run() -> None:
    state = fold([*START, ev.Interrupted(mode="soft"), ev.Done(status="cancelled")])
    assert state.status == "done"
    assert state.messages == ()  # nothing was said, nothing is invented


# ---- bugs found while writing these tests (see the report) --------------------------------


@pytest.mark.parametrize(
    "event",
    [
        ev.TokenStream(text="lost"),
        ev.Reasoning(text="lost"),
        ev.ToolCallStart(call_id="c1", name="calc"),
    ],
)
def test_model_output_before_the_first_thinking_is_illegal(event: ev.Event) -> None:
    # After run_started (or resume) no step is open: text reduced here would show in
    # state.text and then vanish at the next thinking, never reaching the conversation.
    state = fold([ev.RunStarted(run=1)])
    assert_rejected(state, event, f"{event.type} before the step's thinking event in run 1")


# ---- the bus's lazy token fold ------------------------------------------------------


@given(
    prefix=st.lists(st.text(max_size=3), max_size=5),
    texts=st.lists(st.text(max_size=5), max_size=40),
)
def test_fold_tokens_equals_reducing_each_token(prefix: list[str], texts: list[str]) -> None:
    from trio_agent._core.reduce import fold_tokens

    state = fold([ev.RunStarted(run=1), ev.Thinking(run=1, step=1)])
    seq = state.seq
    for text in prefix:  # a state whose text list is shared with older values
        seq += 1
        state = reduce(state, ev.TokenStream(run=1, step=1, seq=seq, text=text))
    tokens = [
        ev.TokenStream(run=1, step=1, seq=seq + i + 1, text=text) for i, text in enumerate(texts)
    ]
    one_by_one = state
    for e in tokens:
        one_by_one = reduce(one_by_one, e)
    assert fold_tokens(state, tokens) == one_by_one
    assert fold_tokens(state, tokens).to_dict() == one_by_one.to_dict()


def test_fold_tokens_refuses_what_reduce_refuses() -> None:
    from trio_agent._core.reduce import fold_tokens

    idle = fold([])
    token = ev.TokenStream(run=1, step=1, seq=1, text="x")
    with pytest.raises(ReduceError, match=r"^can't apply 'token_stream' event in state 'idle'$"):
        fold_tokens(idle, [token])
    started = fold([ev.RunStarted(run=1)])
    with pytest.raises(
        ReduceError, match=r"^token_stream before the step's thinking event in run 1$"
    ):
        fold_tokens(started, [token])


def test_progress_changes_no_status_and_the_call_keeps_the_newest() -> None:
    log = [*START, C1, C1_CALL]
    state = fold(stamped(log))
    assert (state.status, state.call("c1").progress) == ("acting", None)  # type: ignore[union-attr]
    for progress, message in [(1, "one"), (2.5, None)]:
        event = ev.ToolProgress(call_id="c1", progress=progress, total=4, message=message)
        after = reduce(state, event)
        assert after.status == state.status and after.messages == state.messages
        state = after
    call = state.call("c1")
    assert call is not None and call.progress == (2.5, 4, None)
    assert call.to_dict()["progress"] == {"progress": 2.5, "total": 4, "message": None}
    assert reduce(state, C1_OK).call("c1").progress == (2.5, 4, None)  # type: ignore[union-attr]
