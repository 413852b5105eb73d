"""The agent loop: runs, steps in cancel scopes, interrupts, steering, resume, cancel."""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_agent
from trio_agent import events as ev
from trio_agent import tool
from trio_agent.models import Chunk, Finish, Message, ModelError, TextDelta, ToolCallChunk, ToolSpec
from trio_agent.testing import (
    InvariantViolation,
    RecordingModel,
    ScriptBuilder,
    ScriptedModel,
    check_invariants,
    drive,
    schedules,
)

pytestmark = pytest.mark.timeout(30)


@tool
async def nap(seconds: float) -> dict[str, float]:
    """Sleep for a while (a slow tool to interrupt)."""
    await trio.sleep(seconds)
    return {"slept": seconds}


@tool
async def boom(message: str) -> str:
    """Always fails."""
    await trio.lowlevel.checkpoint()
    raise ValueError(message)


TOOLS = [trio_agent.calculator, nap, boom]


def types(log: Any) -> list[str]:
    return [e.type for e in log]


async def wait_for(events: Any, predicate: Any) -> ev.Event:
    """Receive from ``events`` until an event satisfies ``predicate``."""
    async for e in events:
        if predicate(e):
            return e
    raise AssertionError("subscription ended before the awaited event")


def model_of(builder: ScriptBuilder) -> ScriptedModel:
    return ScriptedModel(builder.build())


async def test_a_run_streams_tokens_and_completes(autojump_clock: trio.testing.MockClock) -> None:
    model = model_of(ScriptBuilder().turn(tokens=["Hello", ",", " world"]))
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=model, tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("hi")
                done = await wait_for(events, lambda e: e.type == "done")
            assert types(session.log) == [
                "user_input",
                "run_started",
                "thinking",
                "token_stream",
                "token_stream",
                "token_stream",
                "model_finished",
                "done",
            ]
            assert isinstance(done, ev.Done)
            assert (done.status, done.text) == ("completed", "Hello, world")
            assert session.state.status == "done"
            assert [m.role for m in session.state.messages] == ["user", "assistant"]
            check_invariants(list(session.log), session.state)


async def test_tool_call_streams_runs_and_feeds_the_next_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = (
        ScriptBuilder()
        .turn(
            tokens=["Let me compute."],
            tool_calls=[{"id": "c1", "name": "calculator", "arguments": {"expression": "(2+3)*7"}}],
        )
        .turn(tokens=["It is 35."])
    )
    model = RecordingModel(model_of(script))
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=model, tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("what is (2+3)*7?")
                await wait_for(events, lambda e: e.type == "done")
    log = list(session.log)
    check_invariants(log, session.state)
    deltas = "".join(e.delta for e in log if isinstance(e, ev.ToolCallDelta))
    call = next(e for e in log if isinstance(e, ev.ToolCall))
    result = next(e for e in log if isinstance(e, ev.ToolResult))
    assert trio_agent.events.loads(deltas) == {"expression": "(2+3)*7"}
    assert (call.name, dict(call.arguments)) == ("calculator", {"expression": "(2+3)*7"})
    assert (result.call_id, result.status, result.result) == ("c1", "ok", 35)
    assert len(model.calls) == 2
    second = model.calls[1]
    assert [m.role for m in second] == ["user", "assistant", "tool"]
    assert second[1].tool_calls[0].arguments == {"expression": "(2+3)*7"}
    assert (second[2].call_id, second[2].content) == ("c1", "35")


async def test_steering_message_enters_the_next_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = ScriptBuilder().turn(tokens=["a", "b", "c", "d"], delay=1.0).echo()
    model = RecordingModel(model_of(script))
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model, tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("start")
                await wait_for(events, lambda e: e.type == "token_stream")
                await session.send("and also this")  # steer mid-step
                ack = await wait_for(events, lambda e: e.type == "user_input")
                assert session.state.pending_inputs == ("and also this",)
                done = await wait_for(events, lambda e: e.type == "done")
    assert ack.run == 1 and ack.step == 1
    # Step 1 had no tool calls, but the run went on to answer the steering message.
    assert len(model.calls) == 2
    assert [m.content for m in model.calls[1] if m.role == "user"] == ["start", "and also this"]
    assert isinstance(done, ev.Done) and done.text == "and also this"
    check_invariants(list(session.log), session.state)


async def test_hard_interrupt_cancels_a_slow_tool_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = (
        ScriptBuilder()
        .turn(
            tokens=["napping"],
            tool_calls=[{"id": "n1", "name": "nap", "arguments": {"seconds": 100}}],
        )
        .turn(tokens=["awake"])
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("sleep")
                await wait_for(events, lambda e: e.type == "tool_call")
                t0 = trio.current_time()
                await session.interrupt("hard", reason="too slow")
                result = await wait_for(events, lambda e: e.type == "tool_result")
                interrupted = await wait_for(events, lambda e: e.type == "interrupted")
                assert trio.current_time() - t0 < 1.0
                assert isinstance(result, ev.ToolResult) and result.status == "cancelled"
                assert isinstance(interrupted, ev.Interrupted)
                assert (interrupted.mode, interrupted.reason, interrupted.step) == (
                    "hard",
                    "too slow",
                    1,
                )
                assert session.state.status == "interrupted"
                # The cut step stays in the conversation, marked as cut.
                assistant = [m for m in session.state.messages if m.role == "assistant"]
                assert assistant[-1].cut and assistant[-1].content == "napping"
                await session.resume("wake up")
                done = await wait_for(events, lambda e: e.type == "done")
    assert isinstance(done, ev.Done) and (done.status, done.text) == ("completed", "awake")
    check_invariants(list(session.log), session.state)


async def test_soft_interrupt_lets_the_tool_finish(autojump_clock: trio.testing.MockClock) -> None:
    script = (
        ScriptBuilder()
        .turn(tool_calls=[{"id": "n1", "name": "nap", "arguments": {"seconds": 5}}])
        .turn(tokens=["never reached before resume"])
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("sleep")
                await wait_for(events, lambda e: e.type == "tool_call")
                t0 = trio.current_time()
                await session.interrupt("soft", reason="pause please")
                result = await wait_for(events, lambda e: e.type == "tool_result")
                interrupted = await wait_for(events, lambda e: e.type == "interrupted")
                assert trio.current_time() - t0 == pytest.approx(5.0)
    assert isinstance(result, ev.ToolResult) and result.status == "ok"
    assert isinstance(interrupted, ev.Interrupted) and interrupted.mode == "soft"
    assert [e.type for e in session.log if e.type == "thinking"] == ["thinking"]
    check_invariants(list(session.log), session.state)


async def test_soft_interrupt_escalates_when_its_grace_runs_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = ScriptBuilder().turn(
        tool_calls=[{"id": "n1", "name": "nap", "arguments": {"seconds": 100}}]
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("sleep")
                await wait_for(events, lambda e: e.type == "tool_call")
                t0 = trio.current_time()
                await session.interrupt("soft", reason="wrap up", grace=2.0)
                await wait_for(events, lambda e: e.type == "interrupted")
                assert trio.current_time() - t0 == pytest.approx(2.0)
    tail = [e for e in session.log if e.type in ("interrupt", "tool_result", "interrupted")]
    assert [(e.type, getattr(e, "mode", getattr(e, "status", None))) for e in tail] == [
        ("interrupt", "soft"),
        ("interrupt", "hard"),
        ("tool_result", "cancelled"),
        ("interrupted", "hard"),
    ]
    assert tail[1].reason == "grace period ran out: wrap up"  # type: ignore[attr-defined]
    check_invariants(list(session.log), session.state)


async def test_commands_that_make_no_sense_raise_and_change_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = ScriptBuilder().turn(tokens=["x"] * 5, delay=1.0)
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            with pytest.raises(
                trio_agent.SessionStateError,
                match=r"^can't resume session 's1': it is idle, not interrupted$",
            ):
                await session.resume()
            with pytest.raises(
                trio_agent.SessionStateError,
                match=r"^can't interrupt session 's1': it is idle, not running$",
            ):
                await session.interrupt("hard")
            with pytest.raises(
                trio_agent.SessionStateError,
                match=r"^can't cancel session 's1': it is idle, not running or interrupted$",
            ):
                await session.cancel()
            assert session.log.last_seq == 0
            async with session.subscribe(after=0) as events:
                await session.send("go")
                await wait_for(events, lambda e: e.type == "token_stream")
                before = session.log.last_seq
                with pytest.raises(
                    trio_agent.SessionStateError,
                    match=r"^can't resume session 's1': it is thinking, not interrupted$",
                ):
                    await session.resume("x")
                await session.interrupt("soft")
                with pytest.raises(
                    trio_agent.SessionStateError,
                    match=r"^can't interrupt session 's1': a soft interrupt is already pending$",
                ):
                    await session.interrupt("soft")
                assert session.log.last_seq == before + 1  # only the accepted interrupt
                await session.interrupt("hard")  # escalation is allowed
                await wait_for(events, lambda e: e.type == "interrupted")
                with pytest.raises(
                    trio_agent.SessionStateError,
                    match=r"^can't interrupt session 's1': it is interrupted, not running$",
                ):
                    await session.interrupt("hard")
            with pytest.raises(ValueError, match=r"^mode must be 'soft' or 'hard', got 'fly'$"):
                await session.interrupt("fly")  # type: ignore[arg-type]


async def test_cancel_while_running_and_while_interrupted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = ScriptBuilder().turn(
        tool_calls=[{"id": "n1", "name": "nap", "arguments": {"seconds": 50}}]
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            a = await runtime.open_session("a")
            b = await runtime.open_session("b")
            async with a.subscribe(after=0) as ea, b.subscribe(after=0) as eb:
                await a.send("go")
                await b.send("go")
                await wait_for(ea, lambda e: e.type == "tool_call")
                await wait_for(eb, lambda e: e.type == "tool_call")
                await a.cancel()  # running
                assert a.state.status == "done"
                await b.interrupt("hard")
                await wait_for(eb, lambda e: e.type == "interrupted")
                await b.cancel()  # interrupted
                assert b.state.status == "done"
    for s in (a, b):
        log = list(s.log)
        done = log[-1]
        assert isinstance(done, ev.Done) and done.status == "cancelled"
        assert [e.status for e in log if isinstance(e, ev.ToolResult)] == ["cancelled"]
        check_invariants(log, s.state)


async def test_send_to_an_interrupted_run_resumes_it_with_that_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = (
        ScriptBuilder()
        .turn(tool_calls=[{"id": "n1", "name": "nap", "arguments": {"seconds": 50}}])
        .echo()
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                await wait_for(events, lambda e: e.type == "tool_call")
                await session.interrupt("hard")
                await wait_for(events, lambda e: e.type == "interrupted")
                await session.send("use the calculator instead")
                done = await wait_for(events, lambda e: e.type == "done")
    assert isinstance(done, ev.Done) and done.text == "use the calculator instead"
    tail = types(session.log)[types(session.log).index("interrupted") :]
    assert tail[:4] == ["interrupted", "user_input", "resume", "thinking"]
    check_invariants(list(session.log), session.state)


async def test_steer_then_hard_interrupt_keeps_the_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = ScriptBuilder().turn(tokens=["1", "2", "3"], delay=1.0).echo()
    model = RecordingModel(model_of(script))
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model, tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                await wait_for(events, lambda e: e.type == "token_stream")
                await session.send("steer me")
                await session.interrupt("hard")
                await wait_for(events, lambda e: e.type == "interrupted")
                assert session.state.pending_inputs == ("steer me",)
                await session.resume()
                done = await wait_for(events, lambda e: e.type == "done")
    assert isinstance(done, ev.Done) and done.text == "steer me"
    assert [m.content for m in model.calls[1] if m.role == "user"] == ["go", "steer me"]


async def test_sync_tool_is_abandoned_on_hard_interrupt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = threading.Event()

    @tool
    def blocking(label: str) -> str:
        """Blocks its worker thread until released."""
        release.wait(timeout=30)
        return label

    script = ScriptBuilder().turn(
        tool_calls=[{"id": "b1", "name": "blocking", "arguments": {"label": "x"}}]
    )
    try:
        with trio.fail_after(10):
            async with trio_agent.open_runtime(model=model_of(script), tools=[blocking]) as runtime:
                session = await runtime.open_session("s1")
                async with session.subscribe(after=0) as events:
                    await session.send("go")
                    await wait_for(events, lambda e: e.type == "tool_call")
                    await session.interrupt("hard")
                    result = await wait_for(events, lambda e: e.type == "tool_result")
                    await wait_for(events, lambda e: e.type == "interrupted")
                    assert not release.is_set()  # the thread is still blocked
    finally:
        release.set()
    assert isinstance(result, ev.ToolResult) and result.status == "cancelled"


async def test_tool_timeout_and_exception_become_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = (
        ScriptBuilder()
        .turn(
            tool_calls=[
                {"id": "t1", "name": "nap", "arguments": {"seconds": 100}},
                {"id": "t2", "name": "boom", "arguments": {"message": "kaput"}},
                {"id": "t3", "name": "nope", "arguments": {}},
            ]
        )
        .turn(tokens=["ok"])
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(
            model=model_of(script), tools=TOOLS, tool_timeout=3.0
        ) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                await wait_for(events, lambda e: e.type == "done")
    results = {e.call_id: e for e in session.log if isinstance(e, ev.ToolResult)}
    assert results["t1"].status == "timeout"
    assert (results["t2"].status, results["t2"].error) == ("error", "ValueError: kaput")
    assert results["t3"].status == "error" and "nope" in (results["t3"].error or "")
    check_invariants(list(session.log), session.state)


async def test_a_runaway_run_ends_failed_at_max_steps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = {"id": "c", "name": "calculator", "arguments": {"expression": "1+1"}}
    builder = ScriptBuilder()
    for _ in range(10):
        builder = builder.turn(tool_calls=[call])
    with trio.fail_after(30):
        async with trio_agent.open_runtime(
            model=model_of(builder), tools=TOOLS, max_steps=3
        ) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("loop")
                done = await wait_for(events, lambda e: e.type == "done")
    errors = [e for e in session.log if isinstance(e, ev.Error)]
    assert [(e.code, e.message) for e in errors] == [
        ("max_steps", "run 1 reached the limit of 3 steps (max_steps) without an answer")
    ]
    assert isinstance(done, ev.Done) and done.status == "failed"
    assert session.state.status == "error"
    check_invariants(list(session.log), session.state)


class BrokenModel:
    """Streams a half tool call with bad JSON, a complete one, then fails."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.calls = 0

    async def _stream(self) -> AsyncIterator[Chunk]:
        self.calls += 1
        if self.calls > 1:
            yield TextDelta("recovered")
            yield Finish()
            return
        yield TextDelta("partial")
        yield ToolCallChunk(index=0, call_id="bad", name="calculator", arguments='{"expression": ')
        if self.fail:
            raise ModelError("connection", "the connection dropped mid-stream")
        yield ToolCallChunk(index=0, arguments="oops}")
        yield Finish(reason="tool_calls")

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[Chunk]:
        return self._stream()

    async def aclose(self) -> None:
        pass


async def test_invalid_arguments_are_an_error_result_fed_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=BrokenModel(fail=False), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                done = await wait_for(events, lambda e: e.type == "done")
    result = next(e for e in session.log if isinstance(e, ev.ToolResult))
    assert result.status == "error" and "not valid JSON" in (result.error or "")
    assert isinstance(done, ev.Done) and (done.status, done.text) == ("completed", "recovered")
    tool_message = next(m for m in session.state.messages if m.role == "tool")
    assert tool_message.content == result.error
    check_invariants(list(session.log), session.state)


async def test_model_failure_mid_stream_ends_the_run_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=BrokenModel(fail=True), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                done = await wait_for(events, lambda e: e.type == "done")
    log = list(session.log)
    assert types(log)[-3:] == ["tool_result", "error", "done"]
    result, error = log[-3], log[-2]
    assert isinstance(result, ev.ToolResult) and result.status == "cancelled"
    assert isinstance(error, ev.Error) and (error.code, error.retryable) == ("connection", False)
    assert isinstance(done, ev.Done) and done.status == "failed"
    assistant = [m for m in session.state.messages if m.role == "assistant"]
    assert assistant[-1].cut and assistant[-1].content == "partial"
    check_invariants(log, session.state)


class EndsWith:
    """Streams one word, then ends with the given finish reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[Chunk]:
        await trio.lowlevel.checkpoint()
        yield TextDelta("word")
        yield Finish(self.reason)

    async def aclose(self) -> None:
        pass


async def test_done_carries_the_finish_reason_of_the_runs_last_model_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = (
        ScriptBuilder()
        .turn(tokens=["t"], tool_calls=[{"id": "c1", "name": "calculator", "arguments": {}}])
        .turn(tokens=["answer"])
        .turn(tokens=["slow", "words"], delay=1.0)
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=EndsWith("length")) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                done = await wait_for(events, lambda e: e.type == "done")
        assert isinstance(done, ev.Done) and (done.status, done.text) == ("completed", "word")
        assert done.finish_reason == "length"

        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                done = await wait_for(events, lambda e: e.type == "done")
                # The answer's call ended "stop"; the first one, "tool_calls", is not it.
                assert isinstance(done, ev.Done) and done.finish_reason == "stop"
                # A run cut mid-call: that call never ended by itself.
                await session.send("again")
                await wait_for(events, lambda e: e.type == "token_stream" and e.run == 2)
                await session.cancel()
                done = await wait_for(events, lambda e: e.type == "done")
        assert isinstance(done, ev.Done) and done.status == "cancelled"
        assert done.finish_reason is None
        check_invariants(list(session.log), session.state)


async def test_leaving_the_runtime_ends_runs_through_the_cleanup_path(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = ScriptBuilder().turn(
        tool_calls=[{"id": "n1", "name": "nap", "arguments": {"seconds": 100}}]
    )
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                await wait_for(events, lambda e: e.type == "tool_call")
        # The runtime's nursery is joined here: no task of it is left.
    assert types(session.log)[-2:] == ["tool_result", "done"]
    last = list(session.log)[-1]
    assert isinstance(last, ev.Done) and last.status == "cancelled"
    check_invariants(list(session.log), session.state)


async def test_disconnecting_a_subscriber_does_not_cancel_the_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = ScriptBuilder().turn(tokens=["a", "b", "c"], delay=1.0)
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                await wait_for(events, lambda e: e.type == "token_stream")
            # The subscriber is gone; the run goes on.  A new one replays and finishes.
            async with session.subscribe(after=0) as events:
                done = await wait_for(events, lambda e: e.type == "done")
    assert isinstance(done, ev.Done) and done.text == "abc"


@pytest.mark.parametrize("timeout", [0, -1.0, math.nan])
async def test_a_tool_timeout_that_is_not_a_positive_number_is_refused(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"^tool_timeout must be a positive number of seconds"):
        async with trio_agent.open_runtime(tools=TOOLS, tool_timeout=timeout):
            pass


async def test_session_ids_are_validated_and_reattached(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio_agent.open_runtime(tools=TOOLS) as runtime:
        with pytest.raises(
            ValueError,
            match=r"^invalid session id 'a b': use 1 to 64 characters from A-Z a-z 0-9 _ \. -$",
        ):
            await runtime.open_session("a b")
        with pytest.raises(ValueError, match=r"invalid session id ''"):
            await runtime.open_session("")
        with pytest.raises(ValueError, match=r"invalid session id 'xxxx"):
            await runtime.open_session("x" * 65)
        s1 = await runtime.open_session("s-1.ok_")
        assert await runtime.open_session("s-1.ok_") is s1


def test_invariant_checker_names_the_broken_invariant() -> None:
    log = [
        ev.UserInput(session="s", run=1, seq=1, text="x"),
        ev.RunStarted(session="s", run=1, seq=2),
        ev.Thinking(session="s", run=1, step=1, seq=3),
        ev.ToolCallStart(session="s", run=1, step=1, seq=4, call_id="c1", name="nap"),
        ev.Done(session="s", run=1, step=1, seq=5, status="completed"),
    ]
    with pytest.raises(
        InvariantViolation,
        match=r"^invariant 2: 'done' at seq 5 \(run 1, step 1\) while tool calls 'c1' "
        r"\(started at seq 4\) have no tool_result$",
    ):
        check_invariants(log)
    with pytest.raises(InvariantViolation, match=r"^invariant 1: event #2 is 'thinking' at seq 3"):
        check_invariants([log[0], log[2]])


# ---- properties over arbitrary interrupt schedules -----------------------------------

PROPERTY_SCRIPT = (
    ScriptBuilder()
    .turn(
        tokens=["step", " one"],
        delay=0.3,
        tool_calls=[
            {"id": "a", "name": "nap", "arguments": {"seconds": 1.5}},
            {"id": "b", "name": "calculator", "arguments": {"expression": "2**10"}},
        ],
    )
    .turn(
        tokens=["step", " two"],
        delay=0.2,
        tool_calls=[
            {"id": "c", "name": "nap", "arguments": {"seconds": 0.7}},
        ],
    )
    .echo()
    .turn(tokens=["fin"], delay=0.1)
)


@given(schedule=schedules(max_actions=8, max_time=6.0))
def test_invariants_hold_under_any_interrupt_schedule(schedule: list[Any]) -> None:
    async def main() -> None:
        model = RecordingModel(ScriptedModel(PROPERTY_SCRIPT.build()))
        with trio.fail_after(600):
            async with trio_agent.open_runtime(model=model, tools=TOOLS) as runtime:
                session = await runtime.open_session("p")
                await session.send("begin")
                await drive(session, schedule)
                # Bring the run to an end: resume while paused, then wait for done.
                while session.state.status not in ("done", "error"):
                    if session.state.status == "interrupted":
                        await session.resume()
                    await trio.sleep(0.5)
            log = list(session.log)
            check_invariants(log, session.state)
            # Each steering message is in the input of the model call that follows it.
            for i, e in enumerate(log):
                if isinstance(e, ev.UserInput) and e.step > 0:
                    later = [x for x in log[i:] if x.type == "thinking" and x.run == e.run]
                    if later:
                        call = model.calls[_call_index(log, later[0])]
                        assert e.text in [m.content for m in call if m.role == "user"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def _call_index(log: list[ev.Event], thinking: ev.Event) -> int:
    """Which model call a ``thinking`` event began (model calls count thinking events)."""
    return sum(1 for e in log if e.type == "thinking" and e.seq <= thinking.seq) - 1


@settings(max_examples=10)
@given(st.integers(min_value=1, max_value=5))
def test_runtime_exit_at_any_moment_leaves_a_clean_log(ticks: int) -> None:
    async def main() -> None:
        model = ScriptedModel(PROPERTY_SCRIPT.build())
        async with trio_agent.open_runtime(model=model, tools=TOOLS) as runtime:
            session = await runtime.open_session("p")
            await session.send("begin")
            await trio.sleep(ticks * 0.37)
        check_invariants(list(session.log), session.state)
        assert session.state.status in ("done", "error")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_steer_accepted_while_the_run_ends_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A one-slot lossless subscriber drained by hand: the loop and the steering command
    # both wait for room, and the run's end races the steer.  The steer must still get
    # a step (never a user_input after done, never a pending input left behind).
    model = model_of(ScriptBuilder().turn(tokens=["a", "b"]).echo())
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model, tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            sub = session.open_subscription(capacity=1, policy="block", stall_timeout=1000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.send, "hi")
                while True:
                    await trio.testing.wait_all_tasks_blocked()
                    e = sub.receive_nowait()
                    if isinstance(e, ev.TokenStream) and e.text == "a":
                        break
                await trio.testing.wait_all_tasks_blocked()
                steered = trio.Event()

                async def steer() -> None:
                    await session.send("steer")
                    steered.set()

                nursery.start_soon(steer)
                await trio.testing.wait_all_tasks_blocked()
                # Drain until the steer is in (it may have lost the race and started
                # run 2) and whichever run answers it is over.
                while not (
                    steered.is_set()
                    and session.state.status in ("done", "error")
                    and not sub.statistics().buffered
                ):
                    await trio.testing.wait_all_tasks_blocked()
                    try:
                        sub.receive_nowait()
                    except trio.WouldBlock:
                        await trio.sleep(0.1)
            sub.close()
            state = session.state
    assert state.pending_inputs == ()
    assert state.done_text == "steer"
    check_invariants(list(session.log), state)


async def test_the_runtime_re_raises_the_body_exception_unwrapped() -> None:
    with pytest.raises(ValueError, match=r"^boom$"):
        async with trio_agent.open_runtime():
            raise ValueError("boom")


# ---- closing a session ------------------------------------------------------------


async def test_closing_a_session_cancels_its_run_and_frees_the_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended: list[str] = []

    @tool
    async def slow(seconds: float) -> str:
        """Sleep, and note how it ended."""
        try:
            await trio.sleep(seconds)
        finally:
            ended.append("slow")
        return "slept"

    script = ScriptBuilder().turn(
        tool_calls=[{"id": "c1", "name": "slow", "arguments": {"seconds": 100}}]
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=[slow]) as runtime:
            session = await runtime.open_session("s1")
            received: list[ev.Event] = []
            async with trio.open_nursery() as nursery:

                async def watch(task_status: trio.TaskStatus[None]) -> None:
                    async with session.subscribe(after=0) as events:
                        task_status.started()
                        async for e in events:  # ends with EndOfChannel when closed
                            received.append(e)

                await nursery.start(watch)
                await session.send("go")
                await trio.testing.wait_all_tasks_blocked()
                assert session.state.status == "acting"  # the tool is running
                assert not session.closed
                await session.aclose()
            assert session.closed
            assert ended == ["slow"]  # the tool's task was cancelled and joined
            assert runtime.get_session("s1") is None
            log = list(session.log)
            assert [e.seq for e in received] == [e.seq for e in log]  # all of it, then the end
            assert types(log)[-2:] == ["tool_result", "done"]
            assert (log[-2].status, log[-1].status) == ("cancelled", "cancelled")  # type: ignore[attr-defined]
            check_invariants(log, session.state)
            with pytest.raises(trio.ClosedResourceError, match="session 's1' is closed"):
                await session.send("more")
            await session.aclose()  # a second close does nothing

            again = await runtime.open_session("s1")  # the id starts a new session
            assert again is not session
            assert len(again.log) == 0 and again.state.status == "idle"


async def test_open_session_while_the_id_is_closing_waits_for_a_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = ScriptBuilder().turn(
        tool_calls=[{"id": "c1", "name": "nap", "arguments": {"seconds": 50}}]
    )
    with trio.fail_after(30):
        async with trio_agent.open_runtime(model=model_of(script), tools=TOOLS) as runtime:
            session = await runtime.open_session("s1")
            await session.send("go")
            await trio.testing.wait_all_tasks_blocked()
            # A lossless subscriber that nobody reads: cleanup waits for its eviction.
            stuck = session.open_subscription(capacity=1, policy="block", stall_timeout=20)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.aclose)
                await trio.testing.wait_all_tasks_blocked()
                assert session.closed and runtime.get_session("s1") is session
                fresh = await runtime.open_session("s1")
                assert trio.current_time() >= 20  # after the eviction let the close end
            assert fresh is not session and not fresh.closed
            assert session.state.status == "done"
            stuck.close()


async def test_a_tool_that_changes_its_arguments_or_its_result_changes_no_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kept: list[list[str]] = []

    @tool
    async def collect(items: list[str]) -> list[str]:
        """Sort the items in place and keep the list."""
        await trio.lowlevel.checkpoint()
        items.sort()  # the tool's own copy: tools may do as they like with it
        items.append("z")
        kept.append(items)
        return items

    script = ScriptBuilder().turn(
        tool_calls=[{"id": "c1", "name": "collect", "arguments": {"items": ["b", "a"]}}]
    )
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=model_of(script), tools=[collect]) as runtime:
            session = await runtime.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("go")
                await wait_for(events, lambda e: e.type == "done")
    kept[0].append("after")  # changing what the tool returned, later
    call = next(e for e in session.log if isinstance(e, ev.ToolCall))
    result = next(e for e in session.log if isinstance(e, ev.ToolResult))
    assert call.arguments == {"items": ["b", "a"]}
    assert result.result == ["a", "b", "z"]
    assert session.state.messages[2].content == '["a","b","z"]'


async def test_a_command_waiting_while_the_session_closes_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=model_of(PROPERTY_SCRIPT), tools=TOOLS) as rt:
            session = await rt.open_session("s1")
            errors: list[BaseException] = []

            async def send() -> None:
                try:
                    await session.send("go")
                except trio.ClosedResourceError as exc:
                    errors.append(exc)

            # A full lossless subscriber: the first command waits for room (holding
            # the session's commands, which are applied one at a time), the second
            # waits for the first.
            async with session.subscribe(capacity=1, stall_timeout=1e9):
                await session.publish(ev.Error(code="mine", message="fills the subscriber"))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    nursery.start_soon(send)
                    await trio.testing.wait_all_tasks_blocked()
                    session.close_nowait()
                await session.aclose()
    assert [str(e) for e in errors] == ["session 's1' is closed"] * 2
    assert types(session.log) == ["error"]  # nothing accepted: no run left without its done


async def test_a_run_accepted_just_before_the_close_still_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        async with trio_agent.open_runtime(model=model_of(PROPERTY_SCRIPT), tools=TOOLS) as rt:
            session = await rt.open_session("s1")
            await session.send("go")  # accepted; the loop has not run yet
            session.close_nowait()
            await session.aclose()
    log = list(session.log)
    assert types(log)[:2] == ["user_input", "run_started"]
    assert log[-1].type == "done" and log[-1].status == "cancelled"  # type: ignore[attr-defined]
    check_invariants(log, session.state)


async def test_a_command_blocked_by_a_subscriber_that_cannot_be_evicted_gives_up_in_bounds(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A command's events after the first are published even if its caller is
    # cancelled, but like every shielded publish only for CLEANUP_TIMEOUT: a lossless
    # subscriber that is never evicted (stall_timeout=inf, as the Redis relay) cannot
    # hang the caller for good.  The log holds what was published, nothing half-made.
    from trio_agent import CLEANUP_TIMEOUT

    async with trio_agent.open_runtime(
        model=model_of(ScriptBuilder().turn(tokens=["hi"])), tools=TOOLS
    ) as rt:
        session = await rt.open_session("s1")
        async with session.subscribe(capacity=1, stall_timeout=math.inf):
            start = trio.current_time()
            with trio.fail_after(CLEANUP_TIMEOUT + 5):
                await session.send("hello")  # user_input fits, run_started never does
            assert trio.current_time() - start == pytest.approx(CLEANUP_TIMEOUT)
            assert types(session.log) == ["user_input"]
            assert session.state.pending_inputs == ("hello",)
        assert "could not publish 'run_started' within 30s (CLEANUP_TIMEOUT)" in caplog.text


async def test_in_memory_a_session_is_owned_by_its_process_until_it_closes() -> None:
    with trio.fail_after(5):
        async with trio_agent.open_runtime(model=model_of(ScriptBuilder().turn(["x"]))) as rt:
            session = await rt.open_session("s1")
            assert not session.is_replica
            await session.wait_owned()  # at once: this process runs the agent loop
            await session.aclose()
            assert not session.is_replica
            with pytest.raises(trio.ClosedResourceError, match=r"^session 's1' is closed$"):
                await session.wait_owned()
