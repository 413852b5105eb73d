"""Our events as AG-UI events (the Agent–User Interaction protocol), sans-I/O: the models
are those of the official ``ag-ui-protocol`` package, never copies.

An AG-UI *run* is what one ``POST /agui`` streams, from ``RUN_STARTED`` to
``RUN_FINISHED`` (or ``RUN_ERROR``); it is a stretch of one of our runs, which may take
several: a run that waits for a person's approval ends its AG-UI run with an
``interrupt`` outcome, and the ``POST`` that answers it starts the next one where the
last ended.  :class:`AGUIMapper` follows one AG-UI run: :meth:`~AGUIMapper.prelude` is
how it starts (``RUN_STARTED``, the state and conversation snapshots, and what is in
progress), :meth:`~AGUIMapper.map` turns each of our events into the AG-UI events it
means (none, one or several), keeping what AG-UI wants bracketed bracketed: a text
message, a reasoning span, a tool call's arguments, a step.  The table is in
``docs/agui.md``.  Once it has produced the run's last event, ``finished`` is True and
``ended_at`` the seq of the event that ended it.

The AG-UI run ends when our run does (``done``: finished, cancelled or failed), when it
is paused (``interrupted``: an ``interrupt`` outcome whose answer resumes or cancels it)
or when nothing can happen without a person: a call waits for approval and no other
call of the step runs or streams (an ``interrupt`` outcome, one interrupt per call
waiting).  What our run does after that is the next AG-UI run's.

Each mapper is deterministic in the events it is given, so that a stream can be
re-made from the log (a client that rejoins with ``Last-Event-ID``): message ids depend
on the run's first seq and what happened since, never on the clock or on batching.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    CustomEvent,
    FunctionCall,
    Interrupt,
    Message,
    MessagesSnapshotEvent,
    ReasoningEncryptedValueEvent,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    SystemMessage,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCall,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    ToolMessage,
    UserMessage,
)

from .._core import events as ev
from .agui_interrupts import APPROVAL, APPROVAL_SCHEMA, PAUSED, RESUME_SCHEMA, interrupt_id

__all__ = ["CUSTOM_PREFIX", "AGUIMapper"]

CUSTOM_PREFIX: Final = "trio_agent."
"""Our facts that AG-UI has no event for go out as ``CUSTOM``, named ``trio_agent.<our
event type>``, with our event's wire form as the value."""

_CUSTOM: Final = frozenset(
    {
        "interrupt",
        "interrupted",
        "resume",
        "tool_approval_requested",
        "tool_approval",
        "tool_progress",
        "error",
    }
)

_IN_STEP: Final = frozenset(
    {
        "token_stream",
        "reasoning",
        "tool_call_start",
        "tool_call_delta",
        "tool_call",
        "tool_approval_requested",
        "tool_approval",
        "tool_result",
    }
)
"""Our events that happen inside a step: one that comes while no AG-UI step is open (an
AG-UI run that starts mid-step) opens it."""


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _messages(history: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Our conversation (``State.to_dict()["messages"]``) as AG-UI messages, with ids
    by position (``h<n>``)."""
    out: list[Message] = []
    for n, m in enumerate(history):
        mid = f"h{n}"
        role, content = m["role"], m.get("content") or ""
        if role == "user":
            out.append(UserMessage(id=mid, content=content))
        elif role == "system":
            out.append(SystemMessage(id=mid, content=content))
        elif role == "assistant":
            calls = [
                ToolCall(
                    id=c["call_id"],
                    function=FunctionCall(name=c["name"], arguments=_json(c["arguments"])),
                )
                for c in m.get("tool_calls") or ()
            ]
            out.append(AssistantMessage(id=mid, content=content or None, tool_calls=calls or None))
        elif role == "tool":
            status = m.get("status")
            error = None if status in (None, "ok") else str(status)
            out.append(ToolMessage(id=mid, tool_call_id=m["call_id"], content=content, error=error))
    return out


class AGUIMapper:
    """One AG-UI run of thread ``thread_id`` (our session), run id ``run_id``, starting
    after seq ``start`` (see the module docstring).  ``own_command``: the id of the
    command its input became — that ``user_input`` is the client's own message, not
    echoed back."""

    def __init__(
        self, thread_id: str, run_id: str, start: int, own_command: str | None = None
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.start = start
        self.own_command = own_command
        self.finished = False
        self.ended_at: int | None = None
        self._step: int | None = None  # the open AG-UI step (our step number)
        self._text: str | None = None  # the open text message's id
        self._reasoning: str | None = None  # the open reasoning span and message's id
        self._calls: dict[str, str] = {}  # call id -> "args" | "ready" | "awaiting" | "running"
        self._count = 0  # message ids made so far
        self._error: tuple[str, str] | None = None  # the last error: (code, message)

    def waiting(self, call_ids: Sequence[str]) -> None:
        """Calls that wait for approval since before this run started (a run that
        answers some of a run's interrupts: the others still count)."""
        for cid in call_ids:
            self._calls.setdefault(cid, "awaiting")

    def copy(self) -> AGUIMapper:
        """An independent mapper in the same state (to re-make a stream from here)."""
        return copy.deepcopy(self)

    # ---- the start ---------------------------------------------------------------------

    def prelude(
        self,
        input: RunAgentInput | None = None,
        state: Mapping[str, Any] | None = None,
        *,
        join: bool = False,
    ) -> list[BaseEvent]:
        """How the run starts: ``RUN_STARTED`` (echoing ``input``); with ``state`` (our
        ``State.to_dict()`` at ``start``), ``STATE_SNAPSHOT``, ``MESSAGES_SNAPSHOT`` and
        what is in progress (the step, its text, its tool calls), opened as if it were
        streaming now.  ``join``: a stream that only watches (no input to apply): a
        session with no run going or paused ends it at once."""
        out: list[BaseEvent] = [
            RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id, input=input)
        ]
        if state is None:
            return out
        out.append(StateSnapshotEvent(snapshot=dict(state)))
        out.append(MessagesSnapshotEvent(messages=_messages(state["messages"])))
        status = state["status"]
        if status in ("thinking", "acting"):
            out += self._open_step(int(state["step"]))
            if state["reasoning"]:
                out += self._open_reasoning()
                out.append(self._reasoning_delta(state["reasoning"]))
            if state["text"]:
                out += self._open_text()
                out.append(TextMessageContentEvent(message_id=self._msg(), delta=state["text"]))
            for call in state["tool_calls"]:
                out += self._prime_call(call)
            if join:
                out += self._maybe_waiting(int(state["seq"]))
        elif join and status == "interrupted":
            out += self._finish(
                int(state["seq"]),
                RunFinishedEvent(
                    thread_id=self.thread_id,
                    run_id=self.run_id,
                    outcome=self._paused(int(state["run"]), int(state["seq"]), "the run is paused"),
                ),
            )
        elif join:
            out += self._finish(
                int(state["seq"]), RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id)
            )
        return out

    def _prime_call(self, call: Mapping[str, Any]) -> list[BaseEvent]:
        cid, status = call["call_id"], call["status"]
        out: list[BaseEvent] = [
            ToolCallStartEvent(
                tool_call_id=cid, tool_call_name=call["name"], parent_message_id=self._text
            )
        ]
        if call["arguments_text"]:
            out.append(ToolCallArgsEvent(tool_call_id=cid, delta=call["arguments_text"]))
        if status == "streaming":
            self._calls[cid] = "args"
            return out
        out.append(ToolCallEndEvent(tool_call_id=cid))
        if status in ("running", "awaiting_approval"):
            self._calls[cid] = "awaiting" if status == "awaiting_approval" else "running"
        else:
            out.append(self._result(cid, status, call["result"], call["error"]))
        return out

    # ---- one event -----------------------------------------------------------------------

    def map(self, e: ev.Event) -> list[BaseEvent]:
        """The AG-UI events ``e`` means (none once the run is finished)."""
        if self.finished:
            return []
        kind = e.type
        out: list[BaseEvent] = []
        if kind in _IN_STEP and self._step is None and e.step:
            out += self._open_step(e.step)
        if kind == "thinking":
            out += self._close_streams()
            out += self._close_step()
            out += self._open_step(e.step)
        elif kind in ("token_stream", "reasoning", "tool_call_start", "tool_call_delta"):
            out += self._stream(e)
        elif kind == "tool_call":
            assert isinstance(e, ev.ToolCall)
            out += self._call_ready(e)
        elif kind == "tool_result":
            assert isinstance(e, ev.ToolResult)
            if self._calls.pop(e.call_id, None) == "args":
                out.append(ToolCallEndEvent(tool_call_id=e.call_id))
            out.append(self._result(e.call_id, e.status, e.result, e.error))
        elif kind == "user_input":
            assert isinstance(e, ev.UserInput)
            if e.command_id is None or e.command_id != self.own_command:
                out.append(self._custom(e))  # steering (or a resume) from elsewhere
        elif kind == "done":
            assert isinstance(e, ev.Done)
            out += self._done(e)
        elif kind in _CUSTOM:
            out.append(self._custom(e))
            if isinstance(e, ev.ToolApprovalRequested):
                self._calls[e.call_id] = "awaiting"
            elif isinstance(e, ev.ToolApproval) and e.approved:
                self._calls[e.call_id] = "running"
            elif isinstance(e, ev.ToolApproval):
                self._calls.pop(e.call_id, None)
            elif isinstance(e, ev.Error):
                self._error = (e.code, e.message)
            elif isinstance(e, ev.Interrupted):
                reason = f"paused ({e.mode}) at step {e.step}" + (
                    f": {e.reason}" if e.reason else ""
                )
                out += self._finish(
                    e.seq,
                    RunFinishedEvent(
                        thread_id=self.thread_id,
                        run_id=self.run_id,
                        outcome=self._paused(e.run, e.seq, reason),
                    ),
                )
        # run_started: the AG-UI run started already.
        if not self.finished:
            out += self._maybe_waiting(e.seq)
        ms = int(e.ts * 1000)  # (the unit every AG-UI SDK uses)
        for made in out:
            made.timestamp = ms
        return out

    def _stream(self, e: ev.Event) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        if isinstance(e, ev.TokenStream):
            out += self._close_reasoning()
            if self._text is None:
                out += self._open_text()
            out.append(TextMessageContentEvent(message_id=self._msg(), delta=e.text))
        elif isinstance(e, ev.Reasoning):
            out += self._close_text()
            sealed = e.signature or e.redacted
            if self._reasoning is None and (e.text or sealed):
                out += self._open_reasoning()
            if e.text:
                out.append(self._reasoning_delta(e.text))
            if sealed and self._reasoning is not None:
                rid = self._reasoning
                out.append(ReasoningMessageEndEvent(message_id=rid))
                out.append(
                    ReasoningEncryptedValueEvent(
                        subtype="message", entity_id=rid, encrypted_value=sealed
                    )
                )
                out.append(ReasoningEndEvent(message_id=rid))
                self._reasoning = None
        elif isinstance(e, ev.ToolCallStart):
            parent = self._text
            out += self._close_streams()
            self._calls[e.call_id] = "args"
            out.append(
                ToolCallStartEvent(
                    tool_call_id=e.call_id, tool_call_name=e.name, parent_message_id=parent
                )
            )
        elif isinstance(e, ev.ToolCallDelta) and self._calls.get(e.call_id) == "args":
            out.append(ToolCallArgsEvent(tool_call_id=e.call_id, delta=e.delta))
        return out

    def _call_ready(self, e: ev.ToolCall) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        if e.call_id not in self._calls:  # started before this run: say it whole
            out += self._close_streams()
            out.append(ToolCallStartEvent(tool_call_id=e.call_id, tool_call_name=e.name))
            out.append(ToolCallArgsEvent(tool_call_id=e.call_id, delta=_json(e.arguments)))
        if self._calls.get(e.call_id) in (None, "args"):
            out.append(ToolCallEndEvent(tool_call_id=e.call_id))
        self._calls[e.call_id] = "running"
        return out

    def _done(self, e: ev.Done) -> list[BaseEvent]:
        if e.status == "failed":
            code, message = self._error or ("failed", "the run failed")
            return self._finish(e.seq, RunErrorEvent(message=message, code=code))
        usage = None
        if e.usage:
            i, o = e.usage.get("input_tokens", 0), e.usage.get("output_tokens", 0)
            usage = [TokenUsage(input_tokens=i, output_tokens=o, total_tokens=i + o)]
        return self._finish(
            e.seq,
            RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                result=e.text if e.status == "completed" else None,
                outcome=RunFinishedCancelledOutcome() if e.status == "cancelled" else None,
                usage=usage,
            ),
        )

    def _maybe_waiting(self, seq: int) -> list[BaseEvent]:
        """End the run with one interrupt per call waiting for approval, once nothing
        else can happen without a person (no other call runs or streams)."""
        statuses = self._calls.values()
        if "awaiting" not in statuses or "running" in statuses or "args" in statuses:
            return []
        interrupts = [
            Interrupt(
                id=interrupt_id(APPROVAL, cid, seq),
                reason="tool_approval",
                tool_call_id=cid,
                message=f"may tool call {cid!r} run?",
                response_schema=APPROVAL_SCHEMA,
            )
            for cid, status in self._calls.items()
            if status == "awaiting"
        ]
        return self._finish(
            seq,
            RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                outcome=RunFinishedInterruptOutcome(interrupts=interrupts),
            ),
        )

    def _paused(self, run: int, seq: int, reason: str) -> RunFinishedInterruptOutcome:
        return RunFinishedInterruptOutcome(
            interrupts=[
                Interrupt(
                    id=interrupt_id(PAUSED, str(run), seq),
                    reason=PAUSED,
                    message=f"{reason}: resume it (with an instruction, if you like) or cancel it",
                    response_schema=RESUME_SCHEMA,
                )
            ]
        )

    def _finish(self, seq: int, last: BaseEvent) -> list[BaseEvent]:
        out = [*self._close_streams(), *self._close_calls(), *self._close_step(), last]
        self.finished = True
        self.ended_at = seq
        return out

    # ---- brackets ------------------------------------------------------------------------

    def _msg(self) -> str:
        return f"m{self.start}.{self._count}"

    def _new_id(self) -> str:
        self._count += 1
        return self._msg()

    def _open_step(self, step: int) -> list[BaseEvent]:
        self._step = step
        return [StepStartedEvent(step_name=f"step {step}")]

    def _close_step(self) -> list[BaseEvent]:
        if self._step is None:
            return []
        step, self._step = self._step, None
        return [StepFinishedEvent(step_name=f"step {step}")]

    def _open_text(self) -> list[BaseEvent]:
        self._text = self._new_id()
        return [TextMessageStartEvent(message_id=self._text, role="assistant")]

    def _close_text(self) -> list[BaseEvent]:
        if self._text is None:
            return []
        mid, self._text = self._text, None
        return [TextMessageEndEvent(message_id=mid)]

    def _open_reasoning(self) -> list[BaseEvent]:
        rid = self._reasoning = self._new_id()
        return [ReasoningStartEvent(message_id=rid), ReasoningMessageStartEvent(message_id=rid)]

    def _reasoning_delta(self, text: str) -> BaseEvent:
        assert self._reasoning is not None
        return ReasoningMessageContentEvent(message_id=self._reasoning, delta=text)

    def _close_reasoning(self) -> list[BaseEvent]:
        if self._reasoning is None:
            return []
        rid, self._reasoning = self._reasoning, None
        return [ReasoningMessageEndEvent(message_id=rid), ReasoningEndEvent(message_id=rid)]

    def _close_streams(self) -> list[BaseEvent]:
        return [*self._close_reasoning(), *self._close_text()]

    def _close_calls(self) -> list[BaseEvent]:
        """Arguments still streaming when the run ends (a call cut short): closed."""
        out: list[BaseEvent] = []
        for cid, status in list(self._calls.items()):
            if status == "args":
                out.append(ToolCallEndEvent(tool_call_id=cid))
                self._calls[cid] = "ready"
        return out

    def _result(self, call_id: str, status: str, result: Any, error: str | None) -> BaseEvent:
        content = _json(result) if status == "ok" else (error or status)
        return ToolCallResultEvent(
            message_id=f"r.{call_id}",
            tool_call_id=call_id,
            content=content,
            metadata={"trio_agent": {"status": status}},
        )

    def _custom(self, e: ev.Event) -> BaseEvent:
        return CustomEvent(name=CUSTOM_PREFIX + e.type, value=e.to_dict())
