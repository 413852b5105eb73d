"""The agent loop: one session's runs, their steps, the model stream and the tool calls.

A run is a sequence of steps.  Each step runs inside its own ``trio.CancelScope``:

- the model is called with ``state.messages`` (the reducer's conversation, which holds
  every steering message accepted before the step began), and its chunks go through
  the sans-I/O tool-call assembler into events;
- a tool call whose arguments are complete starts at once in the step's nursery, under
  the runtime's ``CapacityLimiter``, with a timeout — or waits for a person's approval
  first, when it needs one (see :mod:`trio_agent._runtime.calls`);
- a hard interrupt (or ``cancel``, or a soft interrupt whose grace ran out) cancels the
  step's scope now; a soft interrupt waits for the step boundary.  Either way the step
  leaves through one cleanup path: every tool call still open gets its ``tool_result``
  (``cancelled``), then at the boundary the run publishes ``interrupted`` (or ``done``).

The model stream runs in the loop's own task rather than in a producer task joined by a
channel: the assembler is synchronous, so a channel hop per token would buy nothing and
cost a task switch per chunk.  Tool calls are tasks, since they run concurrently with
the stream and with each other.

The loop publishes to the session's working bus with ``publish_new``: the bus builds
each event already stamped (one construction per event), and the loop yields to the
scheduler only when a subscriber is full or every :data:`YIELD_EVERY` events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final

import trio

from .._bus import EventBus
from .._core import events as ev
from .._core.assembler import (
    ArgumentsDelta,
    CallCut,
    CallReady,
    CallStarted,
    Fact,
    ToolCallAssembler,
)
from .._core.model import (
    Chunk,
    Finish,
    ReasoningDelta,
    ReasoningEnd,
    Retrying,
    TextDelta,
    ToolCallChunk,
    ToolCallEnd,
    Usage,
    model_identity,
)
from .._core.state import OPEN_CALL_STATUSES as _OPEN
from ..errors import ModelError
from .calls import ToolCalls, close_open_calls
from .control import RunControl
from .publish import publish_shielded

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["YIELD_EVERY", "AgentLoop"]

logger = logging.getLogger("trio_agent")

YIELD_EVERY: Final = 64
"""Events the agent loop publishes without waiting before it yields to the scheduler,
so that a model that streams without I/O (the scripted one, with no delay) cannot
starve other sessions or hold off a hard interrupt for long."""


class AgentLoop:
    """The agent loop of one session: made and run by ``Session.serve``."""

    def __init__(self, session: str, bus: EventBus, control: RunControl, runtime: Runtime):
        self.session = session
        self.bus = bus
        self.control = control
        self.runtime = runtime
        self._since_yield = 0
        self._usage = Usage()  # the current run's, summed over its model calls
        self._finish_reason: str | None = None  # the run's last model call's, if it ended
        self.calls = ToolCalls(bus, control, runtime, self._emit)
        self.provider, self.model = model_identity(runtime.model)

    async def serve(self) -> None:
        """Run each run as it starts, until cancelled; then end a run left open."""
        control, bus = self.control, self.bus
        try:
            while True:
                s = bus.state
                # (interrupted with a cancel pending: a session recovered from a shared
                # log is paused with no run active; the cancel ends it there)
                if s.running or (control.cancel_requested and s.status == "interrupted"):
                    ended = control.run_ended  # this run's (a send may start the next)
                    try:
                        await self._run()
                    finally:
                        ended.set()
                else:
                    await control.sleep()
        finally:
            # A run accepted just as the session began closing, which the loop never
            # got to run: it ends here, so that no run is left without its ``done``.
            s = bus.state
            if s.running or s.status == "interrupted":
                with trio.CancelScope(shield=True):
                    await close_open_calls(bus, "the session was closed")
                    await publish_shielded(
                        bus, ev.Done(run=s.run, step=bus.state.step, status="cancelled")
                    )
            bus.close()

    # ---- publishing ---------------------------------------------------------------------

    async def _emit(self, cls: type[ev.Event], **fields: Any) -> None:
        """Publish a new event of ``cls``: no scheduler round trip unless a subscriber
        is full (or ``YIELD_EVERY`` events went out without one)."""
        try:
            self.bus.publish_new_nowait(cls, **fields)
        except trio.WouldBlock:
            self._since_yield = 0
            await self.bus.publish_new(cls, **fields)
            return
        if self._yield_due():
            await trio.lowlevel.checkpoint()

    def _yield_due(self) -> bool:
        """Count one publish made without a schedule point; True every YIELD_EVERY."""
        self._since_yield += 1
        if self._since_yield < YIELD_EVERY:
            return False
        self._since_yield = 0
        return True

    async def _token(self, run: int, step: int, text: str) -> None:
        """``_emit`` of one token, through the bus's token entry (the hot path)."""
        try:
            self.bus.publish_token_nowait(run, step, text)
        except trio.WouldBlock:
            self._since_yield = 0
            await self.bus.publish_new(ev.TokenStream, run=run, step=step, text=text)
            return
        if self._yield_due():
            await trio.lowlevel.checkpoint()

    # ---- a run --------------------------------------------------------------------------

    def _done(self, run: int, status: str) -> ev.Done:
        return ev.Done(**self._done_fields(run, status))

    def _done_fields(self, run: int, status: str) -> dict[str, Any]:
        return {
            "run": run,
            "step": self.bus.state.step,
            "status": status,
            "text": self._answer(),
            "usage": {
                "input_tokens": self._usage.input_tokens,
                "output_tokens": self._usage.output_tokens,
            },
            "command_id": self.control.cancel_command_id if status == "cancelled" else None,
            "finish_reason": self._finish_reason,
        }

    async def _run(self) -> None:
        """One run, from ``run_started`` (already published) to ``done``."""
        run = self.bus.state.run
        self._usage = Usage()
        self._finish_reason = None
        try:
            try:
                await self._steps(run)
            except Exception as exc:
                await self._fail(exc)
        finally:
            # Leaving without ``done`` (the runtime is closing): the run ends cancelled,
            # after the step's own cleanup closed its tool calls.
            s = self.bus.state
            if s.run == run and (s.running or s.status == "interrupted"):
                await publish_shielded(self.bus, self._done(run, "cancelled"))

    async def _fail(self, exc: Exception) -> None:
        """An internal error ended the run: say so in the log, keep the session."""
        logger.error("session %r: run failed with an internal error", self.session, exc_info=exc)
        bus = self.bus
        s = bus.state
        message = f"internal error: {type(exc).__name__}: {exc}"
        try:
            await publish_shielded(
                bus, ev.Error(run=s.run, step=s.step, code="internal", message=message)
            )
            if bus.state.running or bus.state.status == "interrupted":
                await publish_shielded(bus, ev.Done(run=s.run, step=s.step, status="failed"))
        except Exception:  # the log itself refuses: nothing more can be said there
            logger.exception("session %r: could not record an internal error", self.session)

    async def _steps(self, run: int) -> None:
        """The steps of run ``run``, each boundary deciding: cancel, pause, fail at
        ``max_steps``, take a step, or end ``done``."""
        bus, control = self.bus, self.control
        max_steps = self.runtime.max_steps
        while True:
            # ---- the step boundary ----
            step = bus.state.step
            if control.cancel_requested:
                await publish_shielded(bus, self._done(run, "cancelled"))
                return
            if control.interrupt is not None:
                mode, reason = control.interrupt
                await publish_shielded(
                    bus, ev.Interrupted(run=run, step=step, mode=mode, reason=reason)
                )
                while bus.state.status == "interrupted" and not control.cancel_requested:
                    await control.sleep()
                continue
            if any(c.approval is not None for c in bus.state.tool_calls if c.status in _OPEN):
                # Recovered from a shared log mid-step with calls waiting for a person:
                # the step goes on where it stood (the waits are durable), then ends.
                outcome = await self._step(run, step, resumed=True)
                self._usage = self._usage + outcome.usage
                continue
            if step >= max_steps:
                message = (
                    f"run {run} reached the limit of {max_steps} steps (max_steps) "
                    "without an answer"
                )
                await publish_shielded(
                    bus, ev.Error(run=run, step=step, code="max_steps", message=message)
                )
                await publish_shielded(bus, self._done(run, "failed"))
                return
            outcome = await self._step(run, step + 1)
            self._usage = self._usage + outcome.usage
            self._finish_reason = outcome.finish_reason or None  # ("": it did not end)
            if outcome.error is not None:
                error = outcome.error
                self.runtime.counters.model_error(error.code)
                await publish_shielded(
                    bus, ev.Error(run=run, step=step + 1, code=error.code, message=error.message)
                )
                await publish_shielded(bus, self._done(run, "failed"))
                return
            pending = control.interrupt
            if (
                outcome.completed
                and (pending is None or pending[0] == "soft")
                and not control.cancel_requested
                and await self._complete(run)
            ):
                # (A soft interrupt pending when the last step completes has nothing
                # left to pause: the run is done.)
                return

    async def _complete(self, run: int) -> bool:
        """Publish ``done`` ``completed`` unless a steering message is pending (then
        the run takes another step: False).  The check and the publish are one
        synchronous step, re-made after any wait for a full subscriber, so a
        ``user_input`` accepted meanwhile is never left behind the run's end."""
        bus = self.bus
        while not bus.state.pending_inputs:
            try:
                bus.publish_new_nowait(ev.Done, **self._done_fields(run, "completed"))
            except trio.WouldBlock:
                await bus.wait_room(ev.Done.type)
                continue
            return True
        return False

    def _answer(self) -> str:
        """The run's answer so far: the newest assistant text."""
        s = self.bus.state
        text = str(s.text)
        if text or s.step_open:
            return text
        for m in reversed(s.messages):
            if m.role == "assistant":
                return m.content
            if m.role == "user":
                break
        return ""

    # ---- a step -------------------------------------------------------------------------

    async def _step(self, run: int, step: int, *, resumed: bool = False) -> _StepOutcome:
        """One step in its own cancel scope (``resumed``: the open step of a recovered
        session, whose pending approvals are waited for again).  Every way out —
        completed, interrupted, cancelled, failed, or the runtime closing — passes the
        same cleanup: each tool call left open gets its ``cancelled`` result."""
        control = self.control
        outcome = _StepOutcome()
        scope = trio.CancelScope()
        try:
            with scope:
                control.step_scope = scope
                if resumed:
                    outcome.made_calls = True
                    async with trio.open_nursery() as tools:
                        self.calls.resume_waits(tools)
                else:
                    await self._emit(
                        ev.Thinking, run=run, step=step, model=self.model, provider=self.provider
                    )
                    await self._stream_and_act(run, step, outcome)
        finally:
            control.step_scope = None
            pending = control.interrupt
            if (
                scope.cancelled_caught
                and pending is not None
                and pending[0] == "soft"
                and not control.cancel_requested
            ):
                # The scope's deadline was the soft interrupt's grace: it escalated.
                reason = control.escalate()
                await publish_shielded(
                    self.bus, ev.Interrupt(run=run, step=step, mode="hard", reason=reason)
                )
            await close_open_calls(self.bus, self._why_cut(outcome))
        outcome.interrupted = scope.cancelled_caught
        return outcome

    async def _stream_and_act(self, run: int, step: int, outcome: _StepOutcome) -> None:
        """Stream the model call into events; start each tool call as soon as its
        arguments are complete; return when the stream ended and every call did."""
        runtime = self.runtime
        assembler = ToolCallAssembler(id_prefix=f"call_r{run}s{step}_")
        async with trio.open_nursery() as tools:
            try:
                requested = trio.current_time()
                first: float | None = None  # seconds to the first chunk
                stream = runtime.model.stream(self.bus.state.messages, runtime.registry.specs())
                async with aclosing(stream) as chunks:  # type: ignore[type-var]
                    async for chunk in chunks:
                        if first is None and type(chunk) is not Retrying:  # (an answer's)
                            first = trio.current_time() - requested
                        if type(chunk) is TextDelta:  # the common case first
                            if chunk.text:
                                await self._token(run, step, chunk.text)
                        elif isinstance(chunk, ToolCallChunk | ToolCallEnd):
                            await self._facts(run, step, assembler.feed(chunk), tools, outcome)
                        else:
                            await self._chunk(run, step, chunk, outcome)
                await self._facts(run, step, assembler.finish(), tools, outcome)
                # The call's end, as a fact of the log (a trace's ``chat`` span ends here).
                counted = outcome.usage
                usage = (
                    {"input_tokens": counted.input_tokens, "output_tokens": counted.output_tokens}
                    if outcome.usage_counted
                    else {}
                )
                await self._emit(
                    ev.ModelFinished,
                    run=run,
                    step=step,
                    finish_reason=outcome.finish_reason,
                    usage=usage,
                    time_to_first_chunk=first,
                )
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
        emit = self._emit
        if isinstance(chunk, TextDelta):
            if chunk.text:
                await self._token(run, step, chunk.text)
        elif isinstance(chunk, ReasoningDelta):
            if chunk.text:
                await emit(ev.Reasoning, run=run, step=step, text=chunk.text)
        elif isinstance(chunk, ReasoningEnd):
            await emit(
                ev.Reasoning,
                run=run,
                step=step,
                text="",
                signature=chunk.signature,
                redacted=chunk.redacted,
            )
        elif isinstance(chunk, Retrying):
            self.runtime.counters.model_retry(chunk.code)
            # The provider's message says what failed and when it tries again.
            await emit(
                ev.Error, run=run, step=step, code=chunk.code, message=chunk.message, retryable=True
            )
        elif isinstance(chunk, Finish):
            outcome.finish_reason = chunk.reason
            if chunk.usage is not None:
                outcome.usage = outcome.usage + chunk.usage
                outcome.usage_counted = True

    async def _facts(
        self,
        run: int,
        step: int,
        facts: Iterable[Fact],
        tools: trio.Nursery,
        outcome: _StepOutcome,
    ) -> None:
        """Publish what the assembler made of the stream; start complete calls."""
        emit = self._emit
        for fact in facts:
            if isinstance(fact, ArgumentsDelta):  # the common case first
                await emit(
                    ev.ToolCallDelta, run=run, step=step, call_id=fact.call_id, delta=fact.delta
                )
            elif isinstance(fact, CallStarted):
                outcome.made_calls = True
                await emit(
                    ev.ToolCallStart, run=run, step=step, call_id=fact.call_id, name=fact.name
                )
            elif isinstance(fact, CallReady):
                if fact.error is not None:
                    await emit(
                        ev.ToolResult,
                        run=run,
                        step=step,
                        call_id=fact.call_id,
                        status="error",
                        error=fact.error,
                    )
                    continue
                arguments = dict(fact.arguments or {})
                await emit(
                    ev.ToolCall,
                    run=run,
                    step=step,
                    call_id=fact.call_id,
                    name=fact.name,
                    arguments=arguments,
                )
                await self.calls.start(tools, run, step, fact.call_id, fact.name, arguments)
            elif isinstance(fact, CallCut):
                await emit(
                    ev.ToolResult,
                    run=run,
                    step=step,
                    call_id=fact.call_id,
                    status="cancelled",
                    error="the model stream was cut before the call's arguments were complete",
                )

    def _why_cut(self, outcome: _StepOutcome) -> str:
        """Why the step's open tool calls are being cancelled, for their results."""
        control = self.control
        if outcome.error is not None:
            return f"the model call failed: {outcome.error.message}"
        if control.cancel_requested:
            return "the run was cancelled"
        if control.interrupt is not None:
            mode, reason = control.interrupt
            return f"{mode} interrupt: {reason}" if reason else f"{mode} interrupt"
        return "the runtime is closing"


class _StepOutcome:
    """What a step came to: whether the model made tool calls, its error, its usage, and
    why its model call ended (its ``Finish``; ``None`` while it has not)."""

    __slots__ = ("error", "finish_reason", "interrupted", "made_calls", "usage", "usage_counted")

    def __init__(self) -> None:
        self.made_calls = False
        self.interrupted = False
        self.error: ModelError | None = None
        self.usage = Usage()
        self.usage_counted = False  # the provider counted tokens (a Finish with usage)
        self.finish_reason = ""  # as the provider gave it (its Finish chunk)

    @property
    def completed(self) -> bool:
        """The model answered without tool calls, uninterrupted: the run may end."""
        return not (self.made_calls or self.interrupted or self.error is not None)
