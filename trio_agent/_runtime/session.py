"""``Session``: one conversation — what it shows, the commands it takes, its lifecycle.

A session has two buses, handed to it by its backend when it is made (see
:mod:`trio_agent._runtime.backend`): the *working* bus the agent loop publishes to, and
the *visible* bus its clients read.  In memory they are one bus; on Redis the visible
one holds only what Redis made durable.  Everything a session shows — ``state``,
``log``, ``statistics()``, ``subscribe`` — is the visible bus.

Commands (``send``, ``interrupt``, ``resume``, ``cancel``; :meth:`Session.apply` for a
parsed one) are decided by the one table of :mod:`trio_agent._core.commands` against
the working state, one at a time, and acknowledged by publishing their events; what they
ask of the running loop goes through its :class:`~trio_agent._runtime.control.RunControl`.

The seams a backend uses (docs/architecture.md, "Extension points"):
:meth:`Session.serve` runs the agent loop; :meth:`Session.route_commands` sends the
session's commands to the process that owns it (a replica), and ``None`` takes them
back; :meth:`Session.recover` closes what a dead owner left in flight.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .._bus import (
    DEFAULT_CAPACITY,
    DEFAULT_STALL_TIMEOUT,
    BusStatistics,
    EventBus,
    EventLog,
    Policy,
    Subscription,
)
from .._core import events as ev
from .._core.commands import (
    Approve,
    Cancel,
    Command,
    Decision,
    Interrupt,
    InterruptMode,
    Resume,
    UserInput,
    decide,
)
from .._core.state import State
from ..errors import ReduceError, SessionClosed, SessionStateError
from .calls import close_open_calls
from .control import RunControl
from .loop import AgentLoop
from .publish import publish_shielded

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["SESSION_ID_RE", "Applied", "CommandRouter", "Session", "validate_session_id"]

logger = logging.getLogger("trio_agent")

SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
"""Session ids: 1–64 characters, URL- and log-safe."""


@attrs.frozen(slots=True)
class Applied:
    """What a command came to: ``seq`` is the event that acknowledged it (its first
    event: ``user_input``, ``interrupt``, ``resume``, ``tool_approval``; a cancel's
    ``done``); ``duplicate``: its id was applied before, and nothing was applied now
    (``seq`` is the event that applied it then)."""

    seq: int
    duplicate: bool = False


CommandRouter = Callable[[Command], Awaitable[Applied]]
"""Where a replica's commands go (see :meth:`Session.route_commands`): it delivers the
command to the owner and returns once the owner applied it, or raises what the owner
raised (``SessionStateError`` with its message), or ``SessionLogError``."""


def validate_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or SESSION_ID_RE.fullmatch(session_id) is None:
        raise ValueError(
            f"invalid session id {session_id!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
        )
    return session_id


class _StartedToo:
    """A ``task_status`` that also sets ``event`` when the task says it started (one
    small object per session; a class made per call would weigh 2.4 KiB a session)."""

    __slots__ = ("event", "task_status")

    def __init__(self, event: trio.Event, task_status: trio.TaskStatus[None]) -> None:
        self.event = event
        self.task_status = task_status

    def started(self, value: None = None) -> None:
        self.event.set()
        self.task_status.started(value)


class Session:
    """One conversation.  Made by ``Runtime.open_session``; see the module docstring."""

    def __init__(self, runtime: Runtime, session_id: str, bus: EventBus, view: EventBus) -> None:
        self.id = session_id
        self._runtime = runtime
        self._bus = bus  # the working bus: the agent loop publishes here
        self._view = view  # what the session shows
        self._router: CommandRouter | None = None  # set on a replica
        self._owner_since: int | None = None  # see ``owner_since``
        self._control = RunControl()
        self._commands = trio.Lock()  # commands are decided and applied one at a time
        self._owned = trio.Event()  # this process runs the agent loop (or never will)
        self._scope = trio.CancelScope()  # around the task serving this session
        self._started = trio.Event()  # that task shows the session's log
        self._stopped = trio.Event()  # that task has ended

    # ---- what the session shows -------------------------------------------------------

    @property
    def state(self) -> State:
        """The reduced state: the fold of the log."""
        return self._view.state

    @property
    def log(self) -> EventLog:
        return self._view.log

    def statistics(self) -> BusStatistics:
        return self._view.statistics()

    def subscribe(
        self,
        *,
        types: Collection[str] | None = None,
        after: int | None = None,
        capacity: int = DEFAULT_CAPACITY,
        policy: Policy = "block",
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ) -> AbstractAsyncContextManager[Subscription]:
        """``async with session.subscribe(...) as events`` — see ``EventBus.subscribe``."""
        return self._view.subscribe(
            types=types, after=after, capacity=capacity, policy=policy, stall_timeout=stall_timeout
        )

    def open_subscription(self, **kwargs: Any) -> Subscription:
        """A subscription to close yourself — see ``EventBus.open_subscription``."""
        return self._view.open_subscription(**kwargs)

    async def publish(self, event: ev.Event) -> ev.Event:
        """Publish an event of your own (unstamped) to the session; returns it stamped."""
        return await self._bus.publish(event)

    def publish_nowait(self, event: ev.Event) -> ev.Event:
        return self._bus.publish_nowait(event)

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def is_replica(self) -> bool:
        """Another process owns this session (a shared log, ``open_runtime(log=...)``):
        this process shows its events and forwards its commands to the owner, which
        decides them against the true state (see docs/redis.md).  False in memory and
        on the owner; a replica stops being one when it takes the session over."""
        return self._router is not None

    @property
    def owner_since(self) -> int | None:
        """The seq after which this process publishes the session's events: the last
        event of the log when it began to run the agent loop (0 for a new session; on
        a shared log, where the previous owners' events end).  None while another
        process owns the session (a replica), and before the session started.  A
        tracer emits the spans whose last event is past it, so that of the processes
        showing a session exactly one emits each span."""
        return self._owner_since

    async def wait_owned(self) -> None:
        """Return once this process owns the session and runs its agent loop: at once
        in memory or on the owner; on a replica, once it took the session over.  Raises
        :class:`~trio_agent.errors.SessionClosed` if the session is closed first."""
        await self._owned.wait()
        self._check_open()

    @property
    def closed(self) -> bool:
        """``aclose`` was called (or the runtime is closing): no more commands."""
        return self._scope.cancel_called or self._stopped.is_set()

    async def aclose(self) -> None:
        """Close the session, as leaving the runtime closes every session: a run still
        going (or paused) ends ``done`` ``cancelled`` through the same cleanup path as a
        hard interrupt, subscribers get what was published and then ``EndOfChannel``,
        and the runtime forgets the id (``open_session`` with it starts a new session).
        With a shared log (``open_runtime(log=...)``) the log stays where it is; on a
        replica only this process's copy closes.  Returns once the session's tasks
        have ended; closing a closed session does nothing."""
        self.close_nowait()
        await self._stopped.wait()

    def close_nowait(self) -> None:
        """Begin closing (see ``aclose``) without waiting for the session's tasks: from
        now on it is ``closed``, its commands refused, and ``open_session`` with its id
        waits for it to be gone and starts a new one."""
        self._scope.cancel()

    async def wait_started(self) -> None:
        """Return once the session shows its log (its backend started it)."""
        await self._started.wait()

    async def wait_closed(self) -> None:
        """Return once the session's tasks have ended (after ``aclose``, a failure, or
        the runtime closing)."""
        await self._stopped.wait()

    # ---- commands -----------------------------------------------------------------------

    async def send(self, text: str, *, id: str | None = None) -> Applied:
        """A user message: starts a run when none is going; steers a running one (the
        text enters the model's input at the next step boundary); resumes an
        interrupted one with it.  Returns once the ``user_input`` event is published.

        On a replica (:attr:`is_replica`) this and every other command is forwarded,
        unjudged, to the owner, which decides it; the call returns once the owner
        applied it, or raises what the owner raised (``SessionStateError`` with its
        message), or ``SessionLogError`` if no verdict came (see docs/redis.md).

        ``id`` (every command takes one): a command whose id the session already
        applied is not applied again (a retry after a reconnect): the call returns what
        applied it (``Applied.duplicate``)."""
        return await self.apply(UserInput(text, id=id))

    async def interrupt(
        self,
        mode: InterruptMode = "soft",
        reason: str = "",
        grace: float | None = None,
        *,
        id: str | None = None,
    ) -> Applied:
        """Pause the run: ``hard`` cancels the step now; ``soft`` at the step boundary
        (escalating to hard after ``grace`` seconds, if given).  Either way the run
        publishes ``interrupted`` and waits for ``resume`` (or ``send``, or
        ``cancel``).  A call waiting for approval ends ``cancelled`` at once, soft or
        hard: nobody waits for a human."""
        return await self.apply(Interrupt(mode, reason, grace, id=id))

    async def resume(self, instruction: str | None = None, *, id: str | None = None) -> Applied:
        """Continue an interrupted run; ``instruction`` becomes a new user message."""
        return await self.apply(Resume(instruction, id=id))

    async def cancel(self, *, id: str | None = None) -> Applied:
        """End the run (running or interrupted) with ``done`` ``cancelled``; returns
        once ``done`` is published (on a replica: once the owner published it)."""
        return await self.apply(Cancel(id=id))

    async def approve(self, call_id: str, *, id: str | None = None) -> Applied:
        """Let tool call ``call_id``, which waits for approval, run (DESIGN §9)."""
        return await self.apply(Approve(call_id, True, "", id=id))

    async def deny(self, call_id: str, reason: str = "", *, id: str | None = None) -> Applied:
        """Refuse tool call ``call_id``, which waits for approval: it ends ``denied``
        with ``reason``, which the model reads, and the run goes on."""
        return await self.apply(Approve(call_id, False, reason, id=id))

    async def apply(self, command: Command) -> Applied:
        """Carry out a command (as ``send``/``interrupt``/``resume``/``cancel`` do): the
        one entry every transport and backend uses.  Returns once the events that
        acknowledge it are visible (``state``, ``log`` and subscribers have them: on a
        shared log, once they are durable).  Raises ``SessionStateError`` (nothing
        changed) for a command that makes no sense now, ``SessionClosed`` once the
        session is closing."""
        self._check_open()
        if self._router is not None:
            return await self._router(command)
        async with self._commands:
            decision, first = await self._accept(command)
            if decision is not None and decision.effect == "duplicate":
                assert decision.applied is not None
                return Applied(decision.applied, duplicate=True)
            control = self._control
            ended = control.run_ended
            if decision is not None:  # (None: logged, took effect only so far)
                if decision.effect == "start_run":
                    control.start_run()
                elif decision.effect == "resume":
                    control.resume()
                elif decision.effect == "interrupt":
                    assert isinstance(command, Interrupt)
                    control.request_interrupt(command.mode, command.reason, command.grace)
                elif decision.effect == "cancel":
                    control.request_cancel(command.id)
                elif decision.effect == "approve":
                    assert isinstance(command, Approve)
                    control.decide(command.call_id, command.approved, command.reason)
            acknowledged = self._bus.log.last_seq
        if decision is not None and decision.effect == "cancel":
            await ended.wait()
            acknowledged = first = self._bus.log.last_seq
        # Visible, too: on a shared log the session shows only what it made durable.
        await self._view.wait_published(acknowledged)
        return Applied(first)

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosed(f"session {self.id!r} is closed")

    async def _accept(self, command: Command) -> tuple[Decision | None, int]:
        """Decide ``command`` and publish its events, all or none.

        The decision and the first publish are one synchronous step: if a full
        subscriber makes us wait, the state may move on meanwhile (the run may end), so
        we decide again after the wait.  Once the first event is out, the rest follow
        even if the caller is cancelled, bounded as every shielded publish is; if one
        cannot be published the command took effect only that far (logged: None).
        (The command lock was the schedule point: publishing waits only when a
        subscriber is full.)  Returns the decision and the seq of its first event.
        """
        bus = self._bus
        while True:
            self._check_open()  # (closing may have begun while we waited)
            cancelling = self._control.cancel_requested
            decision = decide(self.id, bus.state, command, cancelling=cancelling)
            if not decision.events:
                return decision, bus.log.last_seq
            first = decision.events[0]
            try:
                seq = bus.publish_nowait(first).seq
            except trio.WouldBlock:
                await bus.wait_room(first.type)
                continue
            except ReduceError as exc:  # the table should have refused: say so
                raise SessionStateError(f"session {self.id!r} refused the command: {exc}") from None
            break
        for event in decision.events[1:]:
            if not await publish_shielded(bus, event):
                return None, seq
        return decision, seq

    # ---- the seams a backend uses ------------------------------------------------------

    def route_commands(self, router: CommandRouter | None) -> None:
        """Send this session's commands to ``router`` (this process is a replica: the
        owner decides them), or, with ``None``, decide them here again (it became the
        owner).  See docs/architecture.md, "Extension points"."""
        self._router = router
        self._owner_since = None if router is not None else self._bus.log.last_seq

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the agent loop (this process owns the session) until cancelled; a run
        left open ends ``cancelled``, and the working bus is closed.
        ``task_status.started()`` at once: the session shows its log already."""
        task_status.started()
        if self._owner_since is None:
            self._owner_since = self._bus.log.last_seq
        self._owned.set()
        await AgentLoop(self.id, self._bus, self._control, self._runtime).serve()

    async def recover(self, reason: str) -> None:
        """This process took the session over from an owner that died mid-run: the run
        is hard-interrupted with ``reason`` (every open tool call ends ``cancelled``),
        and :meth:`serve` then publishes ``interrupted`` and waits for ``resume``.
        Nothing to do when no run was going.

        Calls waiting for a person's approval are kept (DESIGN §9: they never started,
        so nothing is lost by keeping them): then only the calls that were running end
        ``cancelled``, and :meth:`serve` waits for the pending decisions and goes on."""
        bus = self._bus
        s = bus.state
        if not s.running:
            return
        if s.pending_approvals:
            for call in s.tool_calls:
                if call.status in ("streaming", "running"):
                    await publish_shielded(
                        bus,
                        ev.ToolResult(
                            run=s.run,
                            step=s.step,
                            call_id=call.call_id,
                            status="cancelled",
                            error=f"{reason} (it was in flight there)",
                        ),
                    )
            return
        await bus.publish(ev.Interrupt(run=s.run, step=s.step, mode="hard", reason=reason))
        await close_open_calls(bus, f"hard interrupt: {reason}")
        self._control.interrupt = ("hard", reason)

    async def host(
        self,
        run: Callable[..., Awaitable[None]],
        on_stopped: Callable[[Session], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The task serving this session (``run``, its backend's), in its own cancel
        scope (``aclose``); ``on_stopped`` when it ends.  Started by the runtime.

        One session's failure is not every session's: once it is started, an error
        from it is logged and the session closed, and the runtime carries on.  (Before
        that, the error goes to ``open_session``'s caller.)"""
        started = self._started
        try:
            with self._scope:
                await run(task_status=_StartedToo(started, task_status))
        except Exception:
            if not started.is_set():
                raise
            logger.exception("session %r failed and was closed", self.id)
        finally:
            on_stopped(self)
            self._stopped.set()
            self._owned.set()  # (wakes wait_owned, which sees the session closed)
            if not started.is_set():
                started.set()  # (releases other callers waiting in open_session)
                if self._scope.cancelled_caught:  # closed before it had started:
                    task_status.started()  # open_session returns it, closed
