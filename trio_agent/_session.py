"""The runtime, sessions and the agent loop.

Ownership: :func:`open_runtime` owns a nursery; each :class:`Session` is one task in it
(the agent loop), and each step of a run opens a nursery of its own for the tool calls.
Leaving the runtime ends every run through the same cleanup path as a cancel, then
joins every task: none outlives it.

A run is a sequence of steps.  Each step runs inside its own ``trio.CancelScope``:

- the model is called with ``state.messages`` (the reducer's conversation, which holds
  every steering message accepted before the step began), and its chunks go through
  the sans-I/O tool-call assembler into events;
- a tool call whose arguments are complete starts at once in the step's nursery, under
  the runtime's ``CapacityLimiter``, with a timeout;
- a hard interrupt (or ``cancel``, or a soft interrupt whose grace ran out) cancels the
  step's scope now; a soft interrupt waits for the step boundary.  Either way the step
  leaves through one cleanup path: every tool call still open gets its ``tool_result``
  (``cancelled``), then at the boundary the run publishes ``interrupted`` (or ``done``).

The model stream runs in the agent-loop task itself rather than in a producer task
joined by a channel: the assembler is synchronous, so a channel hop per token would buy
nothing and cost a task switch per chunk.  Tool calls are tasks, since they run
concurrently with the stream and with each other.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from functools import partial
from typing import Any, Final, Literal, Protocol

import attrs
import trio

from . import events as ev
from ._assembler import (
    ArgumentsDelta,
    CallCut,
    CallReady,
    CallStarted,
    Fact,
    ToolCallAssembler,
)
from ._bus import (
    DEFAULT_CAPACITY,
    DEFAULT_LOG_MAX_BYTES,
    DEFAULT_LOG_MAX_EVENTS,
    DEFAULT_STALL_TIMEOUT,
    BusStatistics,
    EventBus,
    EventLog,
    Policy,
    Subscription,
)
from ._reduce import State
from ._tools import Tool, ToolRegistry, execute_tool
from .errors import (
    ReduceError,
    SessionClosed,
    SessionLimitError,
    SessionLogError,
    SessionStateError,
)
from .models._base import (
    Chunk,
    Finish,
    Model,
    ModelError,
    ReasoningDelta,
    ReasoningEnd,
    Retrying,
    TextDelta,
    ToolCallChunk,
    ToolCallEnd,
    Usage,
)

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_TOOL_CONCURRENCY",
    "DEFAULT_TOOL_TIMEOUT",
    "Runtime",
    "Session",
    "SessionLimitError",
    "SessionLog",
    "SessionLogError",
    "SessionStateError",
    "open_runtime",
]

logger = logging.getLogger("trio_agent")

DEFAULT_MAX_STEPS: Final = 25
"""Steps one run may take before it ends ``failed``: a model that keeps calling tools
is a runaway, and each step costs a model call."""

DEFAULT_TOOL_CONCURRENCY: Final = 8
"""Tool calls running at once per runtime (a ``CapacityLimiter``): models ask for a few
parallel calls per step; this bounds threads and sockets when many sessions do."""

DEFAULT_TOOL_TIMEOUT: Final = 60.0
"""Seconds a tool call may run before it ends with status ``timeout`` (a tool can set
its own)."""

DEFAULT_MAX_SESSIONS: Final = 10_000
"""Sessions one runtime holds.  An idle session is a parked task and a small log;
10,000 of them is well under a gigabyte."""

YIELD_EVERY: Final = 64
"""Events the agent loop publishes without waiting before it yields to the scheduler,
so that a model that streams without I/O (the scripted one, with no delay) cannot
starve other sessions or hold off a hard interrupt for long."""

CLEANUP_TIMEOUT: Final = 30.0
"""Seconds a cleanup publish (a ``cancelled`` tool result, ``interrupted``, ``done``)
may wait, shielded, for a full subscriber.  A lossless subscriber is evicted after its
stall timeout long before this; the bound is for one that cannot be (the Redis relay
while Redis is down), so that leaving the runtime can never hang."""

SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
"""Session ids: 1–64 characters, URL- and log-safe."""


class SessionLog(Protocol):
    """Where a runtime's sessions live past one process (``open_runtime(log=...)``);
    see :class:`trio_agent._redis.RedisLog`.  ``run_session`` serves one session in
    the runtime's nursery: it fills ``session.bus`` from the shared log, sets
    ``session.view``, and runs the agent loop (``session._serve``) when this process
    owns the session; it calls ``task_status.started()`` once the session shows its
    log; the runtime forgets the session when it ends."""

    async def run_session(
        self, runtime: Runtime, session: Session, *, task_status: trio.TaskStatus[None]
    ) -> None: ...


def validate_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or SESSION_ID_RE.fullmatch(session_id) is None:
        raise ValueError(
            f"invalid session id {session_id!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
        )
    return session_id


InterruptMode = Literal["soft", "hard"]


class Session:
    """One conversation: its event bus (log, reduced state, subscribers) and its agent
    loop.  Made by ``Runtime.open_session``."""

    def __init__(self, runtime: Runtime, session_id: str, bus: EventBus) -> None:
        self.id = session_id
        self._runtime = runtime
        self.bus = bus
        # What clients subscribe to.  In memory, the bus itself; with a shared log
        # (``open_runtime(log=...)``) a bus holding only events the log made durable.
        self.view: EventBus = bus
        # Set on a replica of a session owned by another process: commands go there,
        # unjudged, and the owner's verdict comes back (see docs/redis.md).
        self._forward: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self._owned = trio.Event()  # this process runs the agent loop (or never will)
        self._commands = trio.Lock()  # commands are checked and applied one at a time
        self._wake = trio.Event()  # the loop waits on this for a run, resume or cancel
        self._run_ended = trio.Event()
        self._step_scope: trio.CancelScope | None = None
        self._interrupt: tuple[InterruptMode, str] | None = None
        self._cancel_requested = False
        self._since_yield = 0
        self._usage = Usage()  # the current run's, summed over its model calls
        self._scope = trio.CancelScope()  # around the task serving this session
        self._stopped = trio.Event()  # that task has ended (see ``aclose``)
        self._ready = trio.Event()  # it has started (it shows its log)

    # ---- what the session shows -------------------------------------------------------

    @property
    def state(self) -> State:
        """The reduced state (the fold of the log)."""
        return self.bus.state

    @property
    def log(self) -> EventLog:
        return self.bus.log

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
        return self.view.subscribe(
            types=types,
            after=after,
            capacity=capacity,
            policy=policy,
            stall_timeout=stall_timeout,
        )

    def open_subscription(self, **kwargs: Any) -> Subscription:
        return self.view.open_subscription(**kwargs)

    def statistics(self) -> BusStatistics:
        return self.bus.statistics()

    async def publish(self, event: ev.Event) -> ev.Event:
        return await self.bus.publish(event)

    def publish_nowait(self, event: ev.Event) -> ev.Event:
        return self.bus.publish_nowait(event)

    @property
    def is_replica(self) -> bool:
        """Another process owns this session (a shared log, ``open_runtime(log=...)``):
        this process shows its events and forwards its commands to the owner, which
        decides them against the true state (see docs/redis.md).  False in memory and
        on the owner; a replica stops being one when it takes the session over."""
        return self._forward is not None

    async def wait_owned(self) -> None:
        """Return once this process owns the session and runs its agent loop: at once
        in memory or on the owner; on a replica, once it took the session over (its
        owner died or closed it, see docs/redis.md).  Raises
        ``trio.ClosedResourceError`` if the session is closed first."""
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

    # ---- commands -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosed(f"session {self.id!r} is closed")

    def _refuse(self, command: str, expected: str) -> SessionStateError:
        return SessionStateError(
            f"can't {command} session {self.id!r}: it is {self.state.status}, not {expected}"
        )

    async def _accept(
        self, decide: Callable[[State], tuple[ev.Event, ...]]
    ) -> tuple[ev.Event, ...]:
        """Publish a command's acknowledgement events, all or none.

        ``decide`` looks at the state and returns the events (or raises
        ``SessionStateError``).  The decision and the first publish are one
        synchronous step: if a full subscriber makes us wait, the state may move on
        meanwhile (the run may end), so we decide again after the wait.  Once the first
        event is out, the rest follow even if the caller is cancelled, bounded by
        ``CLEANUP_TIMEOUT`` as every shielded publish is; returns the events published.
        (The command lock was the schedule point: publishing waits only when a
        subscriber is full.)
        """
        while True:
            self._check_open()  # (closing may have begun while we waited)
            events = decide(self.state)
            try:
                self.bus.publish_nowait(events[0])
            except trio.WouldBlock:
                await self.bus.wait_room(events[0])
                continue
            except ReduceError as exc:  # decide() should have refused: say so
                raise SessionStateError(f"session {self.id!r} refused the command: {exc}") from None
            break
        for i, event in enumerate(events[1:], 1):
            if not await self._emit_shielded(event):
                return events[:i]  # (logged) the command took effect up to here
        return events

    async def send(self, text: str) -> None:
        """A user message: starts a run when none is going; steers a running one (the
        text enters the model's input at the next step boundary); resumes an
        interrupted one with it.  Returns once the ``user_input`` event is published.

        On a replica (:attr:`is_replica`) this and every other command is forwarded,
        unjudged, to the owner, which decides it; the call returns once the owner
        applied it, or raises what the owner raised (``SessionStateError`` with its
        message), or ``SessionLogError`` if no verdict came (see docs/redis.md)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        self._check_open()
        if self._forward is not None:
            return await self._forward("user_input", {"text": text})
        async with self._commands:

            def decide(s: State) -> tuple[ev.Event, ...]:
                if s.status in ("idle", "done", "error"):
                    return ev.UserInput(run=s.run + 1, text=text), ev.RunStarted(run=s.run + 1)
                if s.status == "interrupted":
                    return (
                        ev.UserInput(run=s.run, step=s.step, text=text),
                        ev.Resume(run=s.run, step=s.step),
                    )
                return (ev.UserInput(run=s.run, step=s.step, text=text),)

            events = await self._accept(decide)
            if isinstance(events[-1], ev.RunStarted):
                self._start_run()
            elif isinstance(events[-1], ev.Resume):
                self._interrupt = None
                self._wake.set()

    async def interrupt(
        self, mode: InterruptMode = "soft", reason: str = "", grace: float | None = None
    ) -> None:
        """Pause the run: ``hard`` cancels the step now; ``soft`` at the step boundary
        (escalating to hard after ``grace`` seconds, if given).  Either way the run
        publishes ``interrupted`` and waits for ``resume`` (or ``send``, or
        ``cancel``)."""
        if mode not in ("soft", "hard"):
            raise ValueError(f"mode must be 'soft' or 'hard', got {mode!r}")
        if grace is not None and (mode != "soft" or not grace >= 0):
            raise ValueError(
                f"grace must be a non-negative number of seconds on a soft interrupt, "
                f"got grace={grace!r} with mode={mode!r}"
            )
        self._check_open()
        if self._forward is not None:
            return await self._forward(
                "interrupt", {"mode": mode, "reason": reason, "grace": grace}
            )
        async with self._commands:

            def decide(s: State) -> tuple[ev.Event, ...]:
                if not s.running:
                    raise self._refuse("interrupt", "running")
                if self._cancel_requested:
                    raise SessionStateError(
                        f"can't interrupt session {self.id!r}: it is being cancelled"
                    )
                pending = self._interrupt
                if pending is not None and (pending[0] == "hard" or mode == "soft"):
                    raise SessionStateError(
                        f"can't interrupt session {self.id!r}: a {pending[0]} "
                        "interrupt is already pending"
                    )
                return (
                    ev.Interrupt(run=s.run, step=s.step, mode=mode, reason=reason, grace=grace),
                )

            await self._accept(decide)
            self._interrupt = (mode, reason)
            scope = self._step_scope
            if scope is not None:
                if mode == "hard":
                    scope.cancel()
                elif grace is not None:
                    scope.deadline = min(scope.deadline, trio.current_time() + grace)

    async def resume(self, instruction: str | None = None) -> None:
        """Continue an interrupted run; ``instruction`` becomes a new user message."""
        if instruction is not None and not isinstance(instruction, str):
            raise TypeError(f"instruction must be str or None, got {type(instruction).__name__}")
        self._check_open()
        if self._forward is not None:
            return await self._forward("resume", {"instruction": instruction})
        async with self._commands:

            def decide(s: State) -> tuple[ev.Event, ...]:
                if s.status != "interrupted":
                    raise self._refuse("resume", "interrupted")
                return (ev.Resume(run=s.run, step=s.step, instruction=instruction),)

            await self._accept(decide)
            self._interrupt = None
            self._wake.set()

    async def cancel(self) -> None:
        """End the run (running or interrupted) with ``done`` ``cancelled``; returns
        once ``done`` is published (on a replica: once the owner published it)."""
        self._check_open()
        if self._forward is not None:
            return await self._forward("cancel", {})
        async with self._commands:
            self._check_open()
            s = self.state
            if not (s.running or s.status == "interrupted"):
                raise self._refuse("cancel", "running or interrupted")
            ended = self._run_ended
            self._request_cancel()
        await ended.wait()

    def _request_cancel(self) -> None:
        self._cancel_requested = True
        if self._step_scope is not None:
            self._step_scope.cancel()
        self._wake.set()

    def _start_run(self) -> None:
        self._cancel_requested = False
        self._interrupt = None
        self._run_ended = trio.Event()
        self._wake.set()

    # ---- the agent loop -------------------------------------------------------------

    async def _serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self._owned.set()
        try:
            while True:
                # (interrupted with a cancel pending: a session recovered from a shared
                # log is paused with no ``_run`` active; the cancel ends it there)
                if self.state.running or (
                    self._cancel_requested and self.state.status == "interrupted"
                ):
                    ended = self._run_ended  # this run's (a send may start the next)
                    try:
                        await self._run()
                    finally:
                        ended.set()
                else:
                    await self._sleep()
        finally:
            # A run accepted just as the session began closing, which the loop never
            # got to run: it ends here, so that no run is left without its ``done``.
            s = self.state
            if s.running or s.status == "interrupted":
                with trio.CancelScope(shield=True):
                    await self._close_open_calls(s.run, s.step, "the session was closed")
                    await self._emit_shielded(
                        ev.Done(run=s.run, step=self.state.step, status="cancelled", text="")
                    )
            self.bus.close()

    async def _fail(self, exc: Exception) -> None:
        """An internal error ended the run: say so in the log, keep the session."""
        logger.error("session %r: run failed with an internal error", self.id, exc_info=exc)
        s = self.state
        message = f"internal error: {type(exc).__name__}: {exc}"
        try:
            await self._emit_shielded(
                ev.Error(run=s.run, step=s.step, code="internal", message=message)
            )
            if self.state.running or self.state.status == "interrupted":
                await self._emit_shielded(ev.Done(run=s.run, step=s.step, status="failed", text=""))
        except Exception:  # the log itself refuses: nothing more can be said there
            logger.exception("session %r: could not record an internal error", self.id)

    async def _sleep(self) -> None:
        """Wait until a command wakes the loop (callers re-check the state after)."""
        await self._wake.wait()
        self._wake = trio.Event()

    async def _emit_token(self, run: int, step: int, text: str) -> None:
        """The token hot path: ``_emit`` inlined, and the event built already stamped
        (this session, the next seq, the time), which spares ``publish`` its stamping
        copy."""
        bus = self.bus
        event = ev.TokenStream(
            session=self.id, run=run, step=step, seq=bus.log.last_seq + 1, ts=time.time(), text=text
        )
        try:
            bus.publish_nowait(event)
        except trio.WouldBlock:
            await self._emit(event)  # waits for room, then publishes a fresh stamp
            return
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            await trio.lowlevel.checkpoint()

    async def _emit(self, event: ev.Event) -> ev.Event:
        """Publish from the loop: no scheduler round-trip unless a subscriber is full
        (or ``YIELD_EVERY`` events went out without one)."""
        try:
            stamped = self.bus.publish_nowait(event)
        except trio.WouldBlock:
            self._since_yield = 0
            if event.seq:  # stamped for a seq that will be gone once we have waited
                event = attrs.evolve(event, session="", seq=0, ts=0.0)
            return await self.bus.publish(event)
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            await trio.lowlevel.checkpoint()
        return stamped

    async def _emit_shielded(self, event: ev.Event) -> bool:
        """Publish during cleanup, even though the scope around is cancelled: at once
        when every subscriber has room (no scheduler round-trip on the interrupt path),
        else waiting shielded — bounded: a full lossless subscriber is evicted after
        its stall timeout, and one that cannot be is given up on after
        ``CLEANUP_TIMEOUT`` (logged; returns False)."""
        try:
            self.bus.publish_nowait(event)
        except trio.WouldBlock:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
                await self.bus.publish(event)
            if scope.cancelled_caught:
                logger.error(
                    "session %r: could not publish %r within %gs (CLEANUP_TIMEOUT): a "
                    "subscriber that cannot be evicted is full",
                    self.id,
                    event.type,
                    CLEANUP_TIMEOUT,
                )
                return False
        return True

    async def _run(self) -> None:
        """One run, from ``run_started`` (already published) to ``done``."""
        run = self.state.run
        self._usage = Usage()

        def done(status: str) -> ev.Done:
            return ev.Done(
                run=run,
                step=self.state.step,
                status=status,
                text=self._answer(),
                usage=_usage(self._usage),
            )

        try:
            try:
                await self._steps(run, done)
            except Exception as exc:
                await self._fail(exc)
        finally:
            # Leaving without ``done`` (the runtime is closing): the run ends cancelled,
            # after the step's own cleanup closed its tool calls.
            s = self.state
            if s.run == run and (s.running or s.status == "interrupted"):
                await self._emit_shielded(done("cancelled"))

    async def _steps(self, run: int, done: Callable[[str], ev.Done]) -> None:
        """The steps of run ``run``, each boundary deciding: cancel, pause, fail at
        ``max_steps``, take a step, or end ``done``."""
        max_steps = self._runtime.max_steps
        while True:
            # ---- the step boundary ----
            step = self.state.step
            if self._cancel_requested:
                await self._emit_shielded(done("cancelled"))
                return
            if self._interrupt is not None:
                mode, reason = self._interrupt
                await self._emit_shielded(
                    ev.Interrupted(run=run, step=step, mode=mode, reason=reason)
                )
                while self.state.status == "interrupted" and not self._cancel_requested:
                    await self._sleep()
                continue
            if step >= max_steps:
                await self._emit_shielded(
                    ev.Error(
                        run=run,
                        step=step,
                        code="max_steps",
                        message=f"run {run} reached the limit of {max_steps} steps "
                        "(max_steps) without an answer",
                    )
                )
                await self._emit_shielded(done("failed"))
                return
            outcome = await self._step(run, step + 1)
            self._usage = self._usage + outcome.usage
            if outcome.error is not None:
                await self._emit_shielded(
                    ev.Error(
                        run=run,
                        step=step + 1,
                        code=outcome.error.code,
                        message=outcome.error.message,
                        retryable=False,
                    )
                )
                await self._emit_shielded(done("failed"))
                return
            if (
                outcome.completed
                and (self._interrupt is None or self._interrupt[0] == "soft")
                and not self._cancel_requested
                and await self._complete(done)
            ):
                # (A soft interrupt pending when the last step completes has nothing
                # left to pause: the run is done.)
                return

    async def _complete(self, done: Callable[[str], ev.Done]) -> bool:
        """Publish ``done`` ``completed`` unless a steering message is pending (then
        the run takes another step: False).  The check and the publish are one
        synchronous step, re-made after any wait for a full subscriber, so a
        ``user_input`` accepted meanwhile is never left behind the run's end."""
        while not self.state.pending_inputs:
            event = done("completed")
            try:
                self.bus.publish_nowait(event)
            except trio.WouldBlock:
                await self.bus.wait_room(event)
                continue
            return True
        return False

    def _answer(self) -> str:
        """The run's answer so far: the newest assistant text."""
        s = self.state
        text = str(s.text)
        if text or s.step_open:
            return text
        for m in reversed(s.messages):
            if m.role == "assistant":
                return m.content
            if m.role == "user":
                break
        return ""

    async def _step(self, run: int, step: int) -> _StepOutcome:
        """One step in its own cancel scope.  Every way out — completed, interrupted,
        cancelled, failed, or the runtime closing — passes the same cleanup: each tool
        call left open gets its ``cancelled`` result."""
        outcome = _StepOutcome()
        scope = trio.CancelScope()
        try:
            with scope:
                self._step_scope = scope
                await self._emit(ev.Thinking(run=run, step=step))
                await self._stream_and_act(run, step, outcome)
        finally:
            self._step_scope = None
            if (
                scope.cancelled_caught
                and self._interrupt is not None
                and self._interrupt[0] == "soft"
                and not self._cancel_requested
            ):
                # The scope's deadline was the soft interrupt's grace: it escalated.
                reason = self._interrupt[1]
                reason = f"grace period ran out: {reason}" if reason else "grace period ran out"
                self._interrupt = ("hard", reason)
                await self._emit_shielded(
                    ev.Interrupt(run=run, step=step, mode="hard", reason=reason)
                )
            await self._close_open_calls(run, step, self._why_cut(outcome))
        outcome.interrupted = scope.cancelled_caught
        return outcome

    async def _stream_and_act(self, run: int, step: int, outcome: _StepOutcome) -> None:
        """Stream the model call into events; start each tool call as soon as its
        arguments are complete; return when the stream ended and every call did."""
        runtime = self._runtime
        assembler = ToolCallAssembler(id_prefix=f"call_r{run}s{step}_")
        async with trio.open_nursery() as tools:
            try:
                stream = runtime.model.stream(self.state.messages, runtime.registry.specs())
                async with aclosing(stream) as chunks:  # type: ignore[type-var]
                    async for chunk in chunks:
                        if type(chunk) is TextDelta:  # the hot path: one call per token
                            if chunk.text:
                                await self._emit_token(run, step, chunk.text)
                        elif isinstance(chunk, ToolCallChunk | ToolCallEnd):
                            await self._facts(run, step, assembler.feed(chunk), tools, outcome)
                        else:
                            await self._chunk(run, step, chunk, outcome)
                await self._facts(run, step, assembler.finish(), tools, outcome)
            except ModelError as exc:
                outcome.error = exc
            except Exception as exc:
                # A model that fails in some other way (a bug, an unwrapped library
                # error, a chunk sequence the assembler refuses): the run fails with
                # what happened, and the runtime carries on.
                outcome.error = ModelError("model_error", f"{type(exc).__name__}: {exc}")
            if outcome.error is not None:
                tools.cancel_scope.cancel()
                if assembler.state == "open":
                    await self._facts(run, step, assembler.cut(), tools, outcome)

    async def _chunk(self, run: int, step: int, chunk: Chunk, outcome: _StepOutcome) -> None:
        if isinstance(chunk, TextDelta):
            if chunk.text:
                await self._emit_token(run, step, chunk.text)
        elif isinstance(chunk, ReasoningDelta):
            if chunk.text:
                await self._emit(ev.Reasoning(run=run, step=step, text=chunk.text))
        elif isinstance(chunk, ReasoningEnd):
            await self._emit(
                ev.Reasoning(
                    run=run, step=step, text="", signature=chunk.signature, redacted=chunk.redacted
                )
            )
        elif isinstance(chunk, Retrying):
            # The provider's message says what failed and when it tries again.
            await self._emit(
                ev.Error(run=run, step=step, code=chunk.code, message=chunk.message, retryable=True)
            )
        elif isinstance(chunk, Finish) and chunk.usage is not None:
            outcome.usage = outcome.usage + chunk.usage

    async def _facts(
        self,
        run: int,
        step: int,
        facts: Iterable[Fact],
        tools: trio.Nursery,
        outcome: _StepOutcome,
    ) -> None:
        """Publish what the assembler made of the stream; start complete calls."""
        for fact in facts:
            if isinstance(fact, CallStarted):
                outcome.made_calls = True
                await self._emit(
                    ev.ToolCallStart(run=run, step=step, call_id=fact.call_id, name=fact.name)
                )
            elif isinstance(fact, ArgumentsDelta):
                await self._emit(
                    ev.ToolCallDelta(run=run, step=step, call_id=fact.call_id, delta=fact.delta)
                )
            elif isinstance(fact, CallReady):
                if fact.error is not None:
                    await self._emit(
                        ev.ToolResult(
                            run=run,
                            step=step,
                            call_id=fact.call_id,
                            status="error",
                            error=fact.error,
                        )
                    )
                    continue
                arguments = dict(fact.arguments or {})
                await self._emit(
                    ev.ToolCall(
                        run=run,
                        step=step,
                        call_id=fact.call_id,
                        name=fact.name,
                        arguments=arguments,
                    )
                )
                tools.start_soon(self._call_tool, run, step, fact.call_id, fact.name, arguments)
            elif isinstance(fact, CallCut):
                await self._emit(
                    ev.ToolResult(
                        run=run,
                        step=step,
                        call_id=fact.call_id,
                        status="cancelled",
                        error="the model stream was cut before the call's arguments were complete",
                    )
                )

    async def _call_tool(
        self, run: int, step: int, call_id: str, name: str, arguments: Mapping[str, Any]
    ) -> None:
        runtime = self._runtime
        result = await execute_tool(
            runtime.registry, name, arguments, limiter=runtime.limiter, timeout=runtime.tool_timeout
        )
        await self._emit(
            ev.ToolResult(
                run=run,
                step=step,
                call_id=call_id,
                status=result.status,
                result=result.result,
                error=result.error,
            )
        )

    def _why_cut(self, outcome: _StepOutcome) -> str:
        """Why the step's open tool calls are being cancelled, for their results."""
        if outcome.error is not None:
            return f"the model call failed: {outcome.error.message}"
        if self._cancel_requested:
            return "the run was cancelled"
        if self._interrupt is not None:
            mode, reason = self._interrupt
            return f"{mode} interrupt: {reason}" if reason else f"{mode} interrupt"
        return "the runtime is closing"

    async def _close_open_calls(self, run: int, step: int, why: str) -> None:
        """Every tool call of the step still without a result ends ``cancelled``."""
        for call in self.state.tool_calls:
            if call.status in ("streaming", "running"):
                await self._emit_shielded(
                    ev.ToolResult(
                        run=run, step=step, call_id=call.call_id, status="cancelled", error=why
                    )
                )


class _StepOutcome:
    """What a step came to: whether the model made tool calls, its error, its usage."""

    __slots__ = ("error", "interrupted", "made_calls", "usage")

    def __init__(self) -> None:
        self.made_calls = False
        self.interrupted = False
        self.error: ModelError | None = None
        self.usage = Usage()

    @property
    def completed(self) -> bool:
        """The model answered without tool calls, uninterrupted: the run may end."""
        return not (self.made_calls or self.interrupted or self.error is not None)


def _usage(u: Usage) -> dict[str, int]:
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}


class _Started:
    """A ``task_status`` that also sets ``ready`` when the session has started."""

    def __init__(self, inner: trio.TaskStatus[None], ready: trio.Event) -> None:
        self._inner = inner
        self._ready = ready

    def started(self, value: None = None) -> None:
        self._ready.set()
        self._inner.started(value)


class Runtime:
    """Sessions sharing one model, one tool registry and one tool limiter.  Made by
    :func:`open_runtime`, which owns the nursery every session task runs in."""

    def __init__(
        self,
        nursery: trio.Nursery,
        model: Model,
        tools: Iterable[Tool],
        *,
        max_steps: int = DEFAULT_MAX_STEPS,
        tool_concurrency: int = DEFAULT_TOOL_CONCURRENCY,
        tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        log_max_events: int = DEFAULT_LOG_MAX_EVENTS,
        log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        log: SessionLog | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self._nursery = nursery
        self.model = model
        self.registry = ToolRegistry(tools)
        self.max_steps = max_steps
        self.limiter = trio.CapacityLimiter(tool_concurrency)
        self.tool_timeout = tool_timeout
        self.max_sessions = max_sessions
        self.log_max_events = log_max_events
        self.log_max_bytes = log_max_bytes
        self.session_log = log
        self._sessions: dict[str, Session] = {}
        self._closing = False

    @property
    def sessions(self) -> Mapping[str, Session]:
        return self._sessions

    async def open_session(self, session_id: str) -> Session:
        """The session ``session_id``: started now, or the live one with that id."""
        validate_session_id(session_id)
        while (existing := self._sessions.get(session_id)) is not None:
            if existing.closed:
                await existing._stopped.wait()  # closing: the id is free once it is gone
                continue
            await existing._ready.wait()  # (being started by another caller)
            await trio.lowlevel.checkpoint()
            if not existing.closed:
                return existing
        if self._closing:
            raise SessionClosed("the runtime is closing")
        if len(self._sessions) >= self.max_sessions:
            raise SessionLimitError(
                f"can't open session {session_id!r}: the runtime already holds "
                f"{self.max_sessions} sessions (max_sessions)"
            )
        bus = EventBus(session_id, log=EventLog(self.log_max_events, self.log_max_bytes))
        session = Session(self, session_id, bus)
        self._sessions[session_id] = session
        serve: Callable[..., Awaitable[None]] = (
            session._serve
            if self.session_log is None
            else partial(self.session_log.run_session, self, session)
        )
        try:
            await self._nursery.start(self._host, session, serve)
        except BaseException:
            self._forget(session)
            raise
        return session

    async def _host(
        self,
        session: Session,
        serve: Callable[..., Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The task serving one session, in its own cancel scope (``Session.aclose``).

        One session's failure is not every session's: once it is started, an error
        from it is logged and the session closed, and the runtime carries on.  (Before
        that, the error goes to ``open_session``'s caller.)"""
        status = _Started(task_status, session._ready)
        try:
            with session._scope:
                await serve(task_status=status)
        except Exception:
            if not session._ready.is_set():
                raise
            logger.exception("session %r failed and was closed", session.id)
        finally:
            self._forget(session)
            session._stopped.set()
            session._owned.set()  # (wakes wait_owned, which sees the session closed)
            if not session._ready.is_set():
                session._ready.set()  # (releases other callers waiting in open_session)
                if session._scope.cancelled_caught:  # closed before it had started:
                    task_status.started()  # open_session returns it, closed

    def _forget(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def get_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)


@asynccontextmanager
async def open_runtime(
    model: Model | None = None,
    tools: Iterable[Tool] = (),
    **options: Any,
) -> AsyncIterator[Runtime]:
    """``async with open_runtime(model=..., tools=[...]) as runtime:``

    ``model`` defaults to the built-in scripted demo model (offline).  Options:
    ``max_steps``, ``tool_concurrency``, ``tool_timeout``, ``max_sessions``,
    ``log_max_events``, ``log_max_bytes``, ``log`` (a shared session log, e.g.
    ``trio_agent.redis.open_redis_log(url)``; default: in memory).  On exit every run
    still going ends ``cancelled`` and every task is joined; the model's ``aclose()`` is called.
    """
    if model is None:
        from .models._scripted import ScriptedModel

        model = ScriptedModel.demo()
    try:
        async with trio.open_nursery() as nursery:
            runtime = Runtime(nursery, model, tools, **options)
            try:
                yield runtime
            finally:
                runtime._closing = True
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The body's exception (or a session task's) comes wrapped by the nursery: a
        # simple context manager re-raises it as it is.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], trio.Cancelled):
            raise group.exceptions[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await model.aclose()
