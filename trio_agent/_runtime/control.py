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
- :meth:`wake` / :meth:`sleep`: the loop sleeps until a command wakes it.
"""

from __future__ import annotations

import trio

from .._core.commands import InterruptMode

__all__ = ["RunControl"]


class RunControl:
    """What commands ask of one session's agent loop (see the module docstring)."""

    def __init__(self) -> None:
        self.interrupt: tuple[InterruptMode, str] | None = None
        self.cancel_requested = False
        self.step_scope: trio.CancelScope | None = None
        self.run_ended = trio.Event()
        self._wake = trio.Event()

    # ---- what commands do (after their events are published) --------------------

    def start_run(self) -> None:
        """A run was started (``run_started`` is published): run it."""
        self.cancel_requested = False
        self.interrupt = None
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

    def resume(self) -> None:
        """The run was resumed (``resume`` is published): go on."""
        self.interrupt = None
        self.wake()

    def request_cancel(self) -> None:
        """A cancel was accepted: cut the step now, end the run ``cancelled``."""
        self.cancel_requested = True
        if self.step_scope is not None:
            self.step_scope.cancel()
        self.wake()

    # ---- what the loop does ----------------------------------------------------------

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
