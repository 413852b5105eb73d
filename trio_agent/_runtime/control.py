"""``RunControl``: where a session's commands and its agent loop meet.

A command is decided by the table in :mod:`trio_agent._core.commands` and published
(that is its acknowledgement); what it asks of the *running* loop — stop now, pause at
the step boundary, end the run, wake up for a new run — goes through this one object,
which the session writes and the loop reads.  Nothing else passes between them but the
bus.

- ``interrupt``: the mode and reason of an accepted interrupt the loop has not acted on
  (``interrupted`` not yet published), or None;
- ``cancel_requested``: a cancel was accepted; the loop ends the run ``cancelled``;
- ``step_scope``: the cancel scope of the step in progress (a hard interrupt or a
  cancel cancels it now; a soft interrupt's grace becomes its deadline);
- ``run_ended``: set when the current run has published its ``done``;
- ``approvals``: the calls waiting for a person's decision (DESIGN §9), each with the
  cancel scope of its wait (a soft interrupt ends those waits: it does not wait for a
  human) and the decision once it is made;
- :meth:`wake` / :meth:`sleep`: the loop sleeps until a command wakes it.
"""

from __future__ import annotations

import attrs
import trio

from .._core.commands import InterruptMode

__all__ = ["PendingApproval", "RunControl"]


@attrs.define(eq=False)
class PendingApproval:
    """One call waiting for approval: ``decided`` is set with the decision (or the wait's
    ``scope`` is cancelled by a soft interrupt)."""

    decided: trio.Event = attrs.Factory(trio.Event)
    approved: bool = False
    reason: str = ""
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


class RunControl:
    """What commands ask of one session's agent loop (see the module docstring)."""

    def __init__(self) -> None:
        self.interrupt: tuple[InterruptMode, str] | None = None
        self.cancel_requested = False
        self.step_scope: trio.CancelScope | None = None
        self.run_ended = trio.Event()
        self.cancel_command_id: str | None = None  # the id of the cancel, for its done
        self.approvals: dict[str, PendingApproval] = {}
        self._wake = trio.Event()

    # ---- what commands do (after their events are published) --------------------

    def start_run(self) -> None:
        """A run was started (``run_started`` is published): run it."""
        self.cancel_requested = False
        self.cancel_command_id = None
        self.interrupt = None
        self.approvals.clear()
        self.run_ended = trio.Event()
        self.wake()

    def request_interrupt(self, mode: InterruptMode, reason: str, grace: float | None) -> None:
        """An interrupt was accepted: hard cancels the step now; soft waits for the step
        boundary, its grace (if any) the step's deadline."""
        self.interrupt = (mode, reason)
        scope = self.step_scope
        if scope is not None:
            if mode == "hard":
                scope.cancel()
            elif grace is not None:
                scope.deadline = min(scope.deadline, trio.current_time() + grace)
        for pending in self.approvals.values():
            pending.scope.cancel()  # (a soft interrupt does not wait for a human)

    def resume(self) -> None:
        """The run was resumed (``resume`` is published): go on."""
        self.interrupt = None
        self.wake()

    def request_cancel(self, command_id: str | None = None) -> None:
        """A cancel was accepted: cut the step now, end the run ``cancelled``."""
        self.cancel_requested = True
        if command_id is not None and self.cancel_command_id is None:
            self.cancel_command_id = command_id
        if self.step_scope is not None:
            self.step_scope.cancel()
        self.wake()

    def decide(self, call_id: str, approved: bool, reason: str) -> None:
        """The decision on a call waiting for approval was published: act on it (kept
        for its wait if that has not begun yet: a session being recovered)."""
        pending = self.approvals.get(call_id)
        if pending is None:
            pending = self.approvals[call_id] = PendingApproval()
        pending.approved = approved
        pending.reason = reason
        pending.decided.set()

    # ---- what the loop does ----------------------------------------------------------

    def await_approval(self, call_id: str) -> PendingApproval:
        """Register a call that waits for approval (until :meth:`forget_approval`); its
        decision, if one came first."""
        pending = self.approvals.get(call_id)
        if pending is None:
            pending = self.approvals[call_id] = PendingApproval()
        if self.interrupt is not None and self.interrupt[0] == "soft":
            pending.scope.cancel()  # asked for while a soft interrupt is pending
        return pending

    def forget_approval(self, call_id: str) -> None:
        self.approvals.pop(call_id, None)

    def escalate(self) -> str:
        """The soft interrupt's grace ran out: it is hard now.  Returns its reason."""
        assert self.interrupt is not None
        reason = self.interrupt[1]
        reason = f"grace period ran out: {reason}" if reason else "grace period ran out"
        self.interrupt = ("hard", reason)
        return reason

    def wake(self) -> None:
        self._wake.set()

    async def sleep(self) -> None:
        """Wait until a command wakes the loop (the loop re-checks the state after)."""
        await self._wake.wait()
        self._wake = trio.Event()
