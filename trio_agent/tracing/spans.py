"""``TraceBuilder``: one session's log, event by event, into OpenTelemetry GenAI spans.

Spans follow the GenAI semantic conventions (open-telemetry/semantic-conventions-genai):

- ``invoke_agent {agent}`` (INTERNAL) per run, from ``run_started`` (the ``user_input``
  that started it) to ``done``: ``gen_ai.operation.name``, ``gen_ai.agent.name``,
  ``gen_ai.conversation.id`` (the session), ``gen_ai.provider.name``,
  ``gen_ai.request.model``, the run's ``gen_ai.usage.*``; its span events are the
  run's interrupts, pauses, steering messages and resumes, with their reasons;
- ``chat {model}`` (CLIENT) per step, a child of the run's span, from ``thinking`` to
  ``model_finished``: ``gen_ai.provider.name``, ``gen_ai.request.model``,
  ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` /
  ``output_tokens``, ``gen_ai.response.time_to_first_chunk``; retries as span events;
- ``execute_tool {tool}`` (INTERNAL) per tool call, a child of the run's span, from
  ``tool_call`` (or ``tool_call_start`` for a call whose arguments never completed) to
  ``tool_result``: ``gen_ai.tool.name``, ``gen_ai.tool.call.id``; the approval request
  and decision as span events.

A span that did not end well has ``error.type`` and an error status: a tool call's
``tool_result`` status (``error``, ``timeout``, ``cancelled``, ``denied``); a model call
cut by an interrupt or a cancel, ``cancelled``, or failed, the ``error`` event's code;
a run ``cancelled``, or failed with its last error's code.

**Emitted when complete.**  A span is started and ended in one go when its last event
is read, with the times of its first and last events: so the process that reads the
end emits the whole span, whoever began it — a run recovered by another process
continues its trace (ids: :mod:`.ids`).  ``feed(event, mine)``: ``mine`` says whether
the spans ``event`` ends are this process's to emit (it published the event: see
``Session.owner_since``); the others are only followed.

Content (prompts, arguments, results, answers, steering text) only with
``capture_content``: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON, as the
conventions' schemas say), ``gen_ai.tool.call.arguments`` / ``result``.  A step's input
messages come from folding the log with the reducer, which needs the log from seq 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._core import events as ev
from .._core.model import Message
from .._core.reduce import reduce
from .._core.state import State, initial_state
from ..errors import ReduceError
from .ids import RunKey, preset_ids, run_key, span_id, trace_id

__all__ = ["CONTENT_EVENTS", "TraceBuilder"]

logger = logging.getLogger("trio_agent.tracing")

CONTENT_EVENTS: Final = frozenset({"token_stream", "tool_call_delta", "reasoning"})
"""The event types a tracer reads only to capture content: the streamed text.  Without
content it subscribes to the others alone, so the token path never waits for it."""

_NS: Final = 1_000_000_000


def _ns(ts: float) -> int:
    return int(ts * _NS)


@attrs.define(slots=True)
class _Span:
    """A span being followed: emitted whole once its last event is read."""

    name: str
    kind: SpanKind
    span_id: int
    start: float
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any], float]] = attrs.field(factory=list)
    first_chunk: float | None = None  # (chat) the first streamed event's ts


@attrs.define(slots=True)
class _Run:
    key: RunKey
    trace_id: int
    agent: _Span
    parent: otel_context.Context | None = None  # its children's (made when first emitted)
    chats: dict[int, _Span] = attrs.field(factory=dict)
    calls: dict[str, _Span] = attrs.field(factory=dict)
    paused: bool = False
    resume_text: str | None = None
    error: str | None = None  # the code of the run's last error


class TraceBuilder:
    """One session's spans, built from its log (see the module docstring)."""

    def __init__(
        self,
        tracer: trace.Tracer,
        session: str,
        *,
        agent_name: str,
        capture_content: bool,
    ) -> None:
        self.tracer = tracer
        self.session = session
        self.agent_name = agent_name
        self.capture_content = capture_content
        self.emitted = 0
        """Spans emitted so far."""
        self._ids = preset_ids(tracer)
        self._sampler = getattr(tracer, "sampler", None)
        self._runs: dict[int, _Run] = {}
        self._inputs: dict[int, ev.UserInput] = {}  # a new run's user_input
        self._state: State | None = initial_state(session) if capture_content else None
        self._seen = 0  # the last seq fed
        self._handlers: Mapping[str, Callable[[Any, bool], None]] = {
            "user_input": self._user_input,
            "run_started": self._run_started,
            "thinking": self._thinking,
            "token_stream": self._chunk,
            "reasoning": self._chunk,
            "tool_call_start": self._call_start,
            "tool_call": self._call,
            "tool_approval_requested": self._approval_requested,
            "tool_approval": self._approval,
            "tool_result": self._result,
            "model_finished": self._model_finished,
            "interrupt": self._interrupt,
            "interrupted": self._interrupted,
            "resume": self._resume,
            "error": self._error,
            "done": self._done,
        }

    @property
    def open_runs(self) -> int:
        """Runs begun and not ended (their spans are still being followed)."""
        return len(self._runs)

    def feed(self, event: ev.Event, mine: bool) -> None:
        """Follow ``event``; emit the spans it ends if ``mine``."""
        if self._state is not None:
            if event.seq != self._seen + 1:
                # A gap (the log does not go back to seq 1, or a re-attach after it was
                # trimmed): the state folded from here would be wrong, so no content.
                if self._seen:
                    logger.warning(
                        "session %r: content capture stops: events %d to %d are missing",
                        self.session,
                        self._seen + 1,
                        event.seq - 1,
                    )
                self._state = None
            else:
                try:
                    self._state = reduce(self._state, event)
                except ReduceError as exc:
                    logger.warning("session %r: content capture stops: %s", self.session, exc)
                    self._state = None
        self._seen = event.seq
        handler = self._handlers.get(event.type)
        if handler is not None:
            handler(event, mine)

    # ---- runs --------------------------------------------------------------------------

    def _run(self, e: ev.Event, started: float | None = None) -> _Run:
        """The run of ``e``: followed already, or begun now (from ``run_started``, or
        from whatever event of it comes first when the log no longer holds that)."""
        run = self._runs.get(e.run)
        if run is not None:
            return run
        key = run_key(self.session, e.run, started)
        first = self._inputs.pop(e.run, None)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.agent_name,
            "gen_ai.conversation.id": self.session,
            "trio_agent.run": e.run,
        }
        if self.capture_content and first is not None:
            attributes["gen_ai.input.messages"] = _json([_text_message("user", first.text)])
        name = f"invoke_agent {self.agent_name}"
        tid = trace_id(key)
        agent = _Span(
            name,
            SpanKind.INTERNAL,
            span_id(key, "invoke_agent"),
            first.ts if first else e.ts,
            attributes,
        )
        run = _Run(key, tid, agent)
        self._runs[e.run] = run
        return run

    def _sampled(self, tid: int, name: str, attributes: dict[str, Any]) -> bool:
        """The sampler's decision for the run's span: its children follow it."""
        if self._sampler is None:
            return True
        try:
            result = self._sampler.should_sample(None, tid, name, SpanKind.INTERNAL, attributes)
            return bool(result.decision.is_sampled())
        except Exception:  # (a sampler of its own that cannot judge a root here)
            return True

    def _user_input(self, e: ev.UserInput, mine: bool) -> None:
        run = self._runs.get(e.run)
        if run is None:
            self._inputs[e.run] = e  # (it starts run e.run: run_started follows)
        elif run.paused:
            run.resume_text = e.text  # (the message a resume comes with)
        else:
            attributes = {"trio_agent.step": e.step}
            if self.capture_content:
                attributes["trio_agent.text"] = e.text  # type: ignore[assignment]
            run.agent.events.append(("steer", attributes, e.ts))

    def _run_started(self, e: ev.RunStarted, mine: bool) -> None:
        self._run(e, started=e.ts)

    def _interrupt(self, e: ev.Interrupt, mine: bool) -> None:
        attributes: dict[str, Any] = {
            "trio_agent.interrupt.mode": e.mode,
            "trio_agent.reason": e.reason,
        }
        if e.grace is not None:
            attributes["trio_agent.interrupt.grace"] = float(e.grace)
        self._run(e).agent.events.append(("interrupt", attributes, e.ts))

    def _interrupted(self, e: ev.Interrupted, mine: bool) -> None:
        run = self._run(e)
        run.paused = True
        self._end_chats(run, e.ts, "cancelled", f"{e.mode} interrupt: {e.reason}", mine)
        attributes = {
            "trio_agent.interrupt.mode": e.mode,
            "trio_agent.reason": e.reason,
            "trio_agent.step": e.step,
        }
        run.agent.events.append(("interrupted", attributes, e.ts))

    def _resume(self, e: ev.Resume, mine: bool) -> None:
        run = self._run(e)
        run.paused = False
        attributes: dict[str, Any] = {"trio_agent.step": e.step}
        instruction = e.instruction if e.instruction is not None else run.resume_text
        if self.capture_content and instruction is not None:
            attributes["trio_agent.text"] = instruction
        run.resume_text = None
        run.agent.events.append(("resume", attributes, e.ts))

    def _error(self, e: ev.Error, mine: bool) -> None:
        if not e.session:  # (a client's own error: in no log)
            return
        run = self._runs.get(e.run)
        if run is None:
            return
        attributes = {"trio_agent.error.code": e.code, "trio_agent.error.message": e.message}
        chat = run.chats.get(e.step)
        if e.retryable:
            (chat or run.agent).events.append(("retry", attributes, e.ts))
            return
        run.error = e.code
        if chat is not None:
            self._end_chats(run, e.ts, e.code, e.message, mine)
        else:
            run.agent.events.append(("error", attributes, e.ts))

    def _done(self, e: ev.Done, mine: bool) -> None:
        run = self._run(e)
        self._end_chats(run, e.ts, "cancelled", "the run ended", mine)
        for call in list(run.calls.values()):  # (none: every call has its result first)
            self._emit(run, call, e.ts, "cancelled", "the run ended", mine)
        run.calls.clear()
        agent = run.agent
        for name in ("input_tokens", "output_tokens"):
            if name in e.usage:
                agent.attributes[f"gen_ai.usage.{name}"] = e.usage[name]
        if self.capture_content:
            agent.attributes["gen_ai.output.messages"] = _json(
                [{**_text_message("assistant", e.text), "finish_reason": e.status}]
            )
        error = description = None
        if e.status == "cancelled":
            error, description = "cancelled", "the run was cancelled"
        elif e.status == "failed":
            error = run.error or "failed"
            description = f"the run failed: {error}"
        self._emit(run, agent, e.ts, error, description, mine, parent=False)
        del self._runs[e.run]

    # ---- model calls -------------------------------------------------------------------

    def _thinking(self, e: ev.Thinking, mine: bool) -> None:
        run = self._run(e)
        model = e.model or ""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.conversation.id": self.session,
            "trio_agent.step": e.step,
        }
        for span in (attributes, run.agent.attributes):
            if e.provider:
                span.setdefault("gen_ai.provider.name", e.provider)
            if model:
                span.setdefault("gen_ai.request.model", model)
        state = self._state
        if state is not None:
            attributes["gen_ai.input.messages"] = _json([_message(m) for m in state.messages])
        name = f"chat {model}" if model else "chat"
        run.chats[e.step] = _Span(
            name, SpanKind.CLIENT, span_id(run.key, "chat", e.step), e.ts, attributes
        )

    def _chunk(self, e: ev.Event, mine: bool) -> None:
        run = self._runs.get(e.run)
        chat = run.chats.get(e.step) if run is not None else None
        if chat is not None and chat.first_chunk is None:
            chat.first_chunk = e.ts

    def _model_finished(self, e: ev.ModelFinished, mine: bool) -> None:
        run = self._run(e)
        chat = run.chats.pop(e.step, None)
        if chat is None:
            return
        a = chat.attributes
        if e.finish_reason:
            a["gen_ai.response.finish_reasons"] = (e.finish_reason,)
        for name in ("input_tokens", "output_tokens"):
            if name in e.usage:
                a[f"gen_ai.usage.{name}"] = e.usage[name]
        if e.time_to_first_chunk is not None:
            a["gen_ai.response.time_to_first_chunk"] = float(e.time_to_first_chunk)
        elif chat.first_chunk is not None:
            a["gen_ai.response.time_to_first_chunk"] = chat.first_chunk - chat.start
        state = self._state
        if state is not None:
            parts: list[dict[str, Any]] = []
            if str(state.text):
                parts.append({"type": "text", "content": str(state.text)})
            for c in state.tool_calls:
                parts.append(
                    {"type": "tool_call", "id": c.call_id, "name": c.name, "arguments": c.arguments}
                )
            output = {"role": "assistant", "parts": parts, "finish_reason": e.finish_reason}
            a["gen_ai.output.messages"] = _json([output])
        self._emit(run, chat, e.ts, None, None, mine)

    def _end_chats(self, run: _Run, ts: float, error: str, description: str, mine: bool) -> None:
        """The model calls still open end here, cut (``error``)."""
        for chat in run.chats.values():
            self._emit(run, chat, ts, error, description, mine)
        run.chats.clear()

    # ---- tool calls --------------------------------------------------------------------

    def _call_start(self, e: ev.ToolCallStart, mine: bool) -> None:
        run = self._run(e)
        self._chunk(e, mine)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": e.name,
            "gen_ai.tool.call.id": e.call_id,
            "gen_ai.tool.type": "function",
            "trio_agent.step": e.step,
        }
        run.calls[e.call_id] = _Span(
            f"execute_tool {e.name}",
            SpanKind.INTERNAL,
            span_id(run.key, "execute_tool", e.step, e.call_id),
            e.ts,
            attributes,
        )

    def _call(self, e: ev.ToolCall, mine: bool) -> None:
        run = self._run(e)
        call = run.calls.get(e.call_id)
        if call is None:  # (its start was trimmed from the log)
            self._call_start(
                ev.ToolCallStart(run=e.run, step=e.step, ts=e.ts, call_id=e.call_id, name=e.name),
                mine,
            )
            call = run.calls[e.call_id]
        call.start = e.ts  # execution begins (the arguments streamed before are the model's)
        if self.capture_content:
            call.attributes["gen_ai.tool.call.arguments"] = _json(e.arguments)

    def _approval_requested(self, e: ev.ToolApprovalRequested, mine: bool) -> None:
        call = self._run(e).calls.get(e.call_id)
        if call is not None:
            call.events.append(("tool_approval_requested", {}, e.ts))

    def _approval(self, e: ev.ToolApproval, mine: bool) -> None:
        call = self._run(e).calls.get(e.call_id)
        if call is not None:
            attributes = {"trio_agent.approval.approved": e.approved, "trio_agent.reason": e.reason}
            call.events.append(("tool_approval", attributes, e.ts))

    def _result(self, e: ev.ToolResult, mine: bool) -> None:
        run = self._run(e)
        call = run.calls.pop(e.call_id, None)
        if call is None:
            return
        if e.status == "ok":
            if self.capture_content:
                call.attributes["gen_ai.tool.call.result"] = _json(e.result)
            self._emit(run, call, e.ts, None, None, mine)
        else:
            self._emit(run, call, e.ts, e.status, e.error or e.status, mine)

    # ---- emitting ----------------------------------------------------------------------

    def _emit(
        self,
        run: _Run,
        span: _Span,
        end: float,
        error: str | None,
        description: str | None,
        mine: bool,
        *,
        parent: bool = True,
    ) -> None:
        """Start and end ``span`` in one go (if it is this process's to emit)."""
        if not mine:
            return
        if parent:
            ctx = run.parent
            if ctx is None:  # (once per run: the sampler's decision on its span, for all)
                a = run.agent
                sampled = self._sampled(run.trace_id, a.name, a.attributes)
                flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else 0)
                agent = trace.SpanContext(run.trace_id, a.span_id, False, flags)
                ctx = run.parent = trace.set_span_in_context(trace.NonRecordingSpan(agent))
        else:
            ctx = otel_context.Context()  # the run's span is a root: one trace per run
        if self._ids is not None:
            self._ids.set(run.trace_id, span.span_id)
        otel = self.tracer.start_span(
            span.name,
            context=ctx,
            kind=span.kind,
            attributes=span.attributes,
            start_time=_ns(span.start),
        )
        for name, attributes, ts in span.events:
            otel.add_event(name, attributes, timestamp=_ns(ts))
        if error is not None:
            otel.set_attribute("error.type", error)
            otel.set_status(Status(StatusCode.ERROR, description))
        otel.end(end_time=_ns(max(end, span.start)))
        self.emitted += 1


def _json(value: Any) -> str:
    """A structured attribute as JSON text (spans take no structured values yet)."""
    return orjson.dumps(value, default=str).decode()


def _text_message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def _message(m: Message) -> dict[str, Any]:
    """A conversation message in the conventions' input-messages form."""
    if m.role == "tool":
        return {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": m.call_id, "result": m.content}],
        }
    parts: list[dict[str, Any]] = []
    if m.content:
        parts.append({"type": "text", "content": m.content})
    for c in m.tool_calls:
        parts.append(
            {"type": "tool_call", "id": c.call_id, "name": c.name, "arguments": c.arguments}
        )
    return {"role": m.role, "parts": parts}
