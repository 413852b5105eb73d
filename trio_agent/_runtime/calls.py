"""The tool calls of a step: each runs as a task of the step's nursery, after a
person's approval when it needs one (DESIGN §9), and every one ends with exactly one
``tool_result``.

- :meth:`ToolCalls.start` starts a call whose arguments are complete (``tool_call`` is
  published): at once, or, when the runtime's :class:`~trio_agent.tools.ApprovalPolicy`
  says so, after ``tool_approval_requested`` and the decision (``tool_approval``).
  Approved, the tool runs; denied (or ``approval_timeout`` run out: the loop decides
  itself, "approval timed out"), it ends ``denied`` with the reason, which the model
  reads.  A soft interrupt ends a wait at once (``cancelled``: it never ran); a hard one,
  a cancel or the session closing cancels the step, and :func:`close_open_calls` ends
  the wait the same way.
- :meth:`ToolCalls.resume_waits` waits again for the approvals a recovered session
  still has pending (its owner died while they waited: nothing was lost by keeping them).
- :func:`close_open_calls`: every call of the step still without a result ends
  ``cancelled`` — the one cleanup of a step.

A call runs through ``execute_tool`` with its :class:`CallContext`: a tool that takes its
context (an MCP server's) reports progress and notices through it, published by the
call's own task as events of its step, before its ``tool_result``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from .._bus import EventBus
from .._core import events as ev
from .._core.state import OPEN_CALL_STATUSES
from ..tools.execute import execute_tool
from .control import PendingApproval, RunControl
from .counters import UNKNOWN_TOOL
from .publish import publish_shielded

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["APPROVAL_TIMED_OUT", "CallContext", "ToolCalls", "close_open_calls"]

APPROVAL_TIMED_OUT = "approval timed out"
"""The reason of the decision the runtime makes when ``approval_timeout`` runs out."""

Emit = Callable[..., Awaitable[None]]


async def close_open_calls(bus: EventBus, why: str) -> None:
    """Every tool call of the step still without a result ends ``cancelled`` (``why``
    says why): the one cleanup of a step, also used when a session is recovered."""
    s = bus.state
    for call in s.tool_calls:
        if call.status in ("streaming", "running", "awaiting_approval"):
            error = why
            if call.status == "awaiting_approval":
                error = f"{why} (it was waiting for approval and never ran)"
            await publish_shielded(
                bus,
                ev.ToolResult(
                    run=s.run, step=s.step, call_id=call.call_id, status="cancelled", error=error
                ),
            )


class CallContext:
    """The :class:`~trio_agent.tools.ToolCallContext` of one call: what it reports goes
    to the session's bus as events of its step (``tool_progress``; a notice as an
    ``error`` with ``retryable`` true).  A report that comes once the call has its
    result is dropped."""

    __slots__ = ("bus", "call_id", "emit", "run", "step")

    def __init__(self, bus: EventBus, emit: Emit, run: int, step: int, call_id: str) -> None:
        self.bus = bus
        self.emit = emit
        self.run = run
        self.step = step
        self.call_id = call_id

    def _open(self) -> bool:
        call = self.bus.state.call(self.call_id)
        return call is not None and call.status == "running" and self.bus.state.run == self.run

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        if not self._open():
            await trio.lowlevel.checkpoint()
            return
        await self.emit(
            ev.ToolProgress,
            run=self.run,
            step=self.step,
            call_id=self.call_id,
            progress=float(progress),
            total=None if total is None else float(total),
            message=message,
        )

    async def notice(self, code: str, message: str) -> None:
        if not self._open():
            await trio.lowlevel.checkpoint()
            return
        await self.emit(
            ev.Error, run=self.run, step=self.step, code=code, message=message, retryable=True
        )


class ToolCalls:
    """Starts and finishes the tool calls of one session's steps (see the module)."""

    def __init__(self, bus: EventBus, control: RunControl, runtime: Runtime, emit: Emit) -> None:
        self.bus = bus
        self.control = control
        self.runtime = runtime
        self.emit = emit  # the loop's publish (it counts what went out without a yield)

    async def start(
        self,
        tools: trio.Nursery,
        run: int,
        step: int,
        call_id: str,
        name: str,
        arguments: Mapping[str, Any],
    ) -> None:
        """Start a call whose ``tool_call`` is published."""
        if not self.runtime.approval.needs(name, arguments):
            tools.start_soon(self._execute, run, step, call_id, name, arguments)
            return
        await self.emit(
            ev.ToolApprovalRequested,
            run=run,
            step=step,
            call_id=call_id,
            name=name,
            arguments=arguments,
        )
        # Registered in the same step as the request is published: a decision can come
        # from the next schedule point on, and must find the call waiting.
        pending = self.control.await_approval(call_id)
        tools.start_soon(self._after_approval, pending, run, step, call_id, name, arguments)

    def resume_waits(self, tools: trio.Nursery) -> int:
        """Wait again for the approvals the step still has open (a session recovered
        from a shared log: waiting, or decided since it was recovered); how many."""
        s = self.bus.state
        pending = [
            c for c in s.tool_calls if c.approval is not None and c.status in OPEN_CALL_STATUSES
        ]
        for call in pending:
            arguments = dict(call.arguments or {})
            waiting = self.control.await_approval(call.call_id)
            tools.start_soon(
                self._after_approval, waiting, s.run, s.step, call.call_id, call.name, arguments
            )
        return len(pending)

    async def _execute(
        self, run: int, step: int, call_id: str, name: str, arguments: Mapping[str, Any]
    ) -> None:
        runtime = self.runtime
        label = name if name in runtime.registry else UNKNOWN_TOOL  # (bounded labels)
        began = trio.current_time()
        try:
            result = await execute_tool(
                runtime.registry,
                name,
                arguments,
                limiter=runtime.limiter,
                timeout=runtime.tool_timeout,
                context=CallContext(self.bus, self.emit, run, step, call_id),
            )
        except trio.Cancelled:
            runtime.counters.tool_finished(label, "cancelled", trio.current_time() - began)
            raise
        runtime.counters.tool_finished(label, result.status, trio.current_time() - began)
        await self.emit(
            ev.ToolResult,
            run=run,
            step=step,
            call_id=call_id,
            status=result.status,
            result=result.result,
            error=result.error,
        )

    async def _after_approval(
        self,
        pending: PendingApproval,
        run: int,
        step: int,
        call_id: str,
        name: str,
        arguments: Mapping[str, Any],
    ) -> None:
        control = self.control
        timeout = self.runtime.approval_timeout
        try:
            with pending.scope, trio.move_on_after(math.inf if timeout is None else timeout):
                await pending.decided.wait()
        finally:
            control.forget_approval(call_id)
        if pending.scope.cancelled_caught:  # a soft interrupt: nobody waits for a human
            mode, reason = control.interrupt or ("soft", "")
            why = f"{mode} interrupt: {reason}" if reason else f"{mode} interrupt"
            await self._result(
                run,
                step,
                call_id,
                "cancelled",
                f"{why} (it was waiting for approval and never ran)",
            )
            return
        if not pending.decided.is_set() and not await self._time_out(run, step, call_id):
            return  # (a decision came in the same step as the timeout: it stands)
        call = self.bus.state.call(call_id)
        if call is not None and call.approval == "approved":
            await self._execute(run, step, call_id, name, arguments)
            return
        reason = pending.reason if pending.decided.is_set() else APPROVAL_TIMED_OUT
        await self._result(
            run, step, call_id, "denied", f"denied: {reason}" if reason else "denied"
        )

    async def _time_out(self, run: int, step: int, call_id: str) -> bool:
        """Deny the call "approval timed out" unless a decision was published first
        (then act on that one: True either way, unless the call is gone)."""
        bus = self.bus
        while True:
            call = bus.state.call(call_id)
            if call is None:
                return False
            if call.status != "awaiting_approval":
                return True
            event = ev.ToolApproval(
                run=run, step=step, call_id=call_id, approved=False, reason=APPROVAL_TIMED_OUT
            )
            try:
                bus.publish_nowait(event)  # the check and the publish: one step
            except trio.WouldBlock:
                await bus.wait_room(event.type)
                continue
            return True

    async def _result(self, run: int, step: int, call_id: str, status: str, error: str) -> None:
        await self.emit(
            ev.ToolResult, run=run, step=step, call_id=call_id, status=status, error=error
        )
