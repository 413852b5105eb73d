"""Tool calls that wait for a person's approval (DESIGN §9), and commands with ids,
applied once (DESIGN §6): every state × decision, exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings

import trio_agent
from trio_agent import Session, SessionStateError, tool
from trio_agent import events as ev
from trio_agent.testing import (
    RecordingModel,
    ScriptBuilder,
    check_invariants,
    drive,
    schedules,
)

pytestmark = pytest.mark.timeout(30)


@tool(approval=True)
async def delete(path: str) -> str:
    """Delete a file (it needs a person's yes)."""
    await trio.sleep(1)
    return f"deleted {path}"


@tool(approval=lambda arguments: arguments["seconds"] > 5)
async def wait(seconds: float) -> float:
    """Wait; more than five seconds needs approval."""
    await trio.sleep(seconds)
    return seconds


@tool
async def nap(seconds: float) -> float:
    """Sleep, with no approval needed."""
    await trio.sleep(seconds)
    return seconds


TOOLS = [delete, wait, nap, trio_agent.calculator]


def call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": arguments}


def types(session: Session) -> list[str]:
    return [e.type for e in session.log]


@asynccontextmanager
async def running(builder: ScriptBuilder, **options: Any) -> AsyncIterator[Session]:
    """A session whose model plays ``builder``, with ``TOOLS``."""
    async with trio_agent.open_runtime(model=builder.model(), tools=TOOLS, **options) as rt:
        yield await rt.open_session("s1")


async def until(session: Session, predicate: Any) -> None:
    """Until ``predicate(state)`` holds (woken by each event, never by time)."""
    async with session.subscribe(policy="drop_oldest") as events:
        while not predicate(session.state):
            await events.receive()


def waiting(s: trio_agent.State) -> bool:
    return bool(s.pending_approvals)


def result_of(session: Session, call_id: str) -> ev.ToolResult:
    (result,) = [e for e in session.log if isinstance(e, ev.ToolResult) and e.call_id == call_id]
    return result


ONE_DELETE = (
    ScriptBuilder()
    .turn(["Deleting."], tool_calls=[call("c1", "delete", path="/tmp/x")])
    .turn(["Ok."])
)


# ---- approve, deny ---------------------------------------------------------------------


async def test_a_call_that_needs_approval_waits_then_runs_once_approved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(ONE_DELETE) as session:
        await session.send("delete it")
        await until(session, waiting)
        (pending,) = session.state.pending_approvals
        assert (pending.call_id, pending.name, dict(pending.arguments or {})) == (
            "c1",
            "delete",
            {"path": "/tmp/x"},
        )
        assert session.state.to_dict()["pending_approvals"][0]["call_id"] == "c1"
        start = trio.current_time()
        await trio.sleep(3600)  # nobody decides: it waits (no approval_timeout)
        # (the model call ended after the request: nothing since)
        assert session.state.pending_approvals and types(session)[-2:] == [
            "tool_approval_requested",
            "model_finished",
        ]
        await session.approve("c1")
        await until(session, lambda s: s.status == "done")
        assert trio.current_time() - start == pytest.approx(3600 + 1)  # ran after the yes
    kinds = types(session)
    i = kinds.index("tool_approval_requested")
    assert kinds[i - 1 : i + 4] == [
        "tool_call",
        "tool_approval_requested",
        "model_finished",
        "tool_approval",
        "tool_result",
    ]
    assert (result_of(session, "c1").status, result_of(session, "c1").result) == (
        "ok",
        "deleted /tmp/x",
    )
    check_invariants(list(session.log), session.state)


async def test_a_denied_call_ends_denied_and_the_model_reads_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = RecordingModel(ONE_DELETE.model())
    async with trio_agent.open_runtime(model=model, tools=TOOLS) as rt:
        session = await rt.open_session("s1")
        await session.send("delete it")
        await until(session, waiting)
        await session.deny("c1", "not that file")
        await until(session, lambda s: s.status == "done")
    result = result_of(session, "c1")
    assert (result.status, result.error) == ("denied", "denied: not that file")
    approval = next(e for e in session.log if isinstance(e, ev.ToolApproval))
    assert (approval.approved, approval.reason) == (False, "not that file")
    tool_message = model.calls[1][-1]
    assert (tool_message.role, tool_message.status, tool_message.content) == (
        "tool",
        "denied",
        "denied: not that file",
    )
    assert session.state.done_text == "Ok."  # the run went on
    check_invariants(list(session.log), session.state)


async def test_the_other_calls_of_the_step_run_while_one_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    builder = (
        ScriptBuilder()
        .turn(tool_calls=[call("a", "delete", path="p"), call("b", "calculator", expression="6*7")])
        .turn(["done"])
    )
    async with running(builder) as session:
        await session.send("go")
        await until(session, lambda s: s.call("b") is not None and s.call("b").status == "ok")
        assert [c.status for c in session.state.tool_calls] == ["awaiting_approval", "ok"]
        await session.approve("a")
        await until(session, lambda s: s.status == "done")
    check_invariants(list(session.log), session.state)


async def test_a_predicate_decides_per_call(autojump_clock: trio.testing.MockClock) -> None:
    builder = (
        ScriptBuilder()
        .turn(tool_calls=[call("short", "wait", seconds=1), call("long", "wait", seconds=10)])
        .turn(["done"])
    )
    async with running(builder) as session:
        await session.send("go")
        await until(session, waiting)
        assert [c.call_id for c in session.state.pending_approvals] == ["long"]
        await until(session, lambda s: s.call("short").status == "ok")
        await session.approve("long")
        await until(session, lambda s: s.status == "done")
    requested = [e.call_id for e in session.log if isinstance(e, ev.ToolApprovalRequested)]
    assert requested == ["long"]


async def test_the_runtime_overrides_a_tools_own_approval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    builder = (
        ScriptBuilder()
        .turn(tool_calls=[call("d", "delete", path="p"), call("c", "calculator", expression="1")])
        .turn(["done"])
    )
    async with running(builder, approval={"delete": False, "calculator": True}) as session:
        await session.send("go")
        await until(session, waiting)
        assert [c.call_id for c in session.state.pending_approvals] == ["c"]
        await session.approve("c")
        await until(session, lambda s: s.status == "done")


async def test_an_override_for_a_tool_the_runtime_lacks_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^approval names the tool 'rm', which the runtime does not have; its tools: ",
    ):
        async with trio_agent.open_runtime(tools=TOOLS, approval={"rm": True}):
            pass


async def test_an_approval_timeout_denies_the_call(autojump_clock: trio.testing.MockClock) -> None:
    async with running(ONE_DELETE, approval_timeout=30) as session:
        await session.send("delete it")
        await until(session, waiting)
        start = trio.current_time()
        await until(session, lambda s: s.status == "done")
        assert trio.current_time() - start == pytest.approx(30)
        with pytest.raises(
            SessionStateError,
            match=r"^can't approve a tool call of session 's1': it is done, not running$",
        ):
            await session.approve("c1")
    approval = next(e for e in session.log if isinstance(e, ev.ToolApproval))
    assert (approval.approved, approval.reason, approval.command_id) == (
        False,
        "approval timed out",
        None,
    )
    assert result_of(session, "c1").error == "denied: approval timed out"
    check_invariants(list(session.log), session.state)


# ---- decisions that make no sense ---------------------------------------------------


async def test_a_decision_for_a_call_that_is_not_waiting_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    builder = (
        ScriptBuilder()
        .turn(tool_calls=[call("d", "delete", path="p"), call("n", "nap", seconds=60)])
        .turn(["done"])
    )
    with pytest.raises(
        SessionStateError,
        match=r"^can't approve a tool call of session 's1': it is idle, not running$",
    ):
        async with running(builder) as session:
            await session.approve("d")
    async with running(builder) as session:
        await session.send("go")
        await until(session, waiting)
        before = len(session.log)
        for decide, message in [
            (
                session.approve("n"),
                "can't approve tool call 'n' of session 's1': it is running, not awaiting approval",
            ),
            (
                session.deny("zz"),
                "can't deny tool call 'zz' of session 's1': the current step has no such call",
            ),
        ]:
            with pytest.raises(SessionStateError, match=f"^{message}$"):
                await decide
        assert len(session.log) == before  # nothing was published
        await session.approve("d")
        with pytest.raises(
            SessionStateError,
            match=r"^can't deny tool call 'd' of session 's1': it is running, "
            r"not awaiting approval$",
        ):
            await session.deny("d", "too late")  # decided already: once
        await until(session, lambda s: s.status == "done")
    assert [e.approved for e in session.log if isinstance(e, ev.ToolApproval)] == [True]


# ---- interrupts, cancel and closing while a call waits --------------------------------


async def test_a_soft_interrupt_does_not_wait_for_a_human(
    autojump_clock: trio.testing.MockClock,
) -> None:
    builder = (
        ScriptBuilder()
        .turn(tool_calls=[call("d", "delete", path="p"), call("n", "nap", seconds=5)])
        .turn(["done"])
    )
    async with running(builder) as session:
        await session.send("go")
        await until(session, waiting)
        start = trio.current_time()
        await session.interrupt("soft", reason="stop there")
        await until(session, lambda s: s.call("d").status == "cancelled")
        assert trio.current_time() == start  # at once: it never ran
        assert result_of(session, "d").error == (
            "soft interrupt: stop there (it was waiting for approval and never ran)"
        )
        await until(session, lambda s: s.status == "interrupted")
        assert trio.current_time() - start == pytest.approx(5)  # the started nap ran on
        assert result_of(session, "n").status == "ok"
    check_invariants(list(session.log), session.state)


@pytest.mark.parametrize("how", ["hard", "cancel", "close"])
async def test_a_hard_interrupt_a_cancel_or_closing_ends_the_wait_cancelled(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(ONE_DELETE) as session:
        await session.send("delete it")
        await until(session, waiting)
        start = trio.current_time()
        if how == "hard":
            await session.interrupt("hard", reason="no")
            await until(session, lambda s: s.status == "interrupted")
        elif how == "cancel":
            await session.cancel()
        else:
            await session.aclose()
        assert trio.current_time() == start  # at once
        last = types(session)[-1]
    result = result_of(session, "c1")
    assert result.status == "cancelled"
    assert result.error is not None and result.error.endswith(
        "(it was waiting for approval and never ran)"
    )
    assert last == ("interrupted" if how == "hard" else "done")
    check_invariants(list(session.log), session.state)


# ---- commands with ids -------------------------------------------------------------------


async def test_a_command_with_an_id_is_applied_once(autojump_clock: trio.testing.MockClock) -> None:
    async with running(ScriptBuilder().turn(["a", "b", "c"], delay=60)) as session:
        first = await session.send("hello", id="m1")
        again = await session.send("hello", id="m1")  # a retry after a reconnect
        assert (again.seq, again.duplicate, first.duplicate) == (first.seq, True, False)
        user = session.log.get(first.seq)
        assert isinstance(user, ev.UserInput) and user.command_id == "m1"
        assert [e.type for e in session.log].count("user_input") == 1
        cancelled = await session.cancel(id="k1")
        assert isinstance(session.log.get(cancelled.seq), ev.Done)
        assert session.log.get(cancelled.seq).command_id == "k1"  # type: ignore[attr-defined]
        assert (await session.cancel(id="k1")) == trio_agent.Applied(cancelled.seq, duplicate=True)


async def test_a_refused_commands_id_is_not_remembered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(ScriptBuilder().turn(["a"])) as session:
        with pytest.raises(SessionStateError):
            await session.resume(id="r1")  # idle: refused, not applied
        applied = await session.send("go", id="r1")  # the id is free: applied
        assert not applied.duplicate


async def test_an_approval_with_an_id_is_applied_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(ONE_DELETE) as session:
        await session.send("delete it")
        await until(session, waiting)
        first = await session.approve("c1", id="yes-1")
        again = await session.approve("c1", id="yes-1")  # not "it is running": applied once
        assert again == trio_agent.Applied(first.seq, duplicate=True)
        await until(session, lambda s: s.status == "done")


# ---- properties ------------------------------------------------------------------------------

PROPERTY_SCRIPT = (
    ScriptBuilder()
    .turn(["Let", " me"], delay=0.2, tool_calls=[call("p1", "delete", path="a")])
    .turn(
        ["more"],
        delay=0.2,
        tool_calls=[call("p2", "nap", seconds=0.5), call("p3", "delete", path="b")],
    )
    .turn(["Done."], delay=0.2)
)


@settings(deadline=None, max_examples=60)
@given(schedule=schedules(max_actions=10, max_time=6.0))
def test_invariants_hold_under_any_schedule_of_decisions_and_interrupts(schedule: Any) -> None:
    async def main() -> None:
        with trio.fail_after(120):
            async with running(PROPERTY_SCRIPT, approval_timeout=4) as session:
                await session.send("go")
                await drive(session, schedule)
                # (an undecided call is denied after approval_timeout: the run ends, or
                # pauses if an interrupt was accepted)
                ended = ("done", "error", "interrupted")
                await until(session, lambda s: s.status in ended)
                if session.state.status == "interrupted":
                    await session.cancel()
            check_invariants(list(session.log), session.state)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
