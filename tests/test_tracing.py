"""Traces derived from the log (``trio_agent.tracing``), checked with the OpenTelemetry
SDK's in-memory exporter over scripted runs: one trace per run with the GenAI spans and
attributes, parallel tools, a hard interrupt and its resume, failures, approvals,
content only when opted in, and a tracer that was evicted losing no span.  (The OTLP
export and a run recovered by another process: tests/test_tracing_otlp.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import trio_agent
from trio_agent import Session, Subscription, tool
from trio_agent import events as ev
from trio_agent.errors import ModelError
from trio_agent.models import Chunk, Message, TextDelta, ToolSpec
from trio_agent.testing import ScriptBuilder
from trio_agent.tracing import SessionTracer, TraceBuilder, run_key, span_id, trace_id

pytestmark = pytest.mark.timeout(30)


@tool(approval=True)
async def delete(path: str) -> str:
    """Delete a file (it needs a person's yes)."""
    return f"deleted {path}"


TOOLS = [trio_agent.calculator, trio_agent.sleep, delete]


def call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": arguments}


@asynccontextmanager
async def traced(
    model: Any, exporter: InMemorySpanExporter, **tracer_options: Any
) -> AsyncIterator[Session]:
    """A session of a runtime whose sessions are traced into ``exporter``.  The spans
    are all there once the block is left (the runtime joined its tracers)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if tracer_options:
        options: dict[str, Any] = {"observers": [SessionTracer(provider, **tracer_options)]}
    else:
        options = {"tracer_provider": provider}
    async with trio_agent.open_runtime(model=model, tools=TOOLS, **options) as runtime:
        yield await runtime.open_session("s1")


async def until(session: Session, predicate: Any) -> None:
    """Until ``predicate(state)`` holds (woken by each event, never by time)."""
    async with session.subscribe(policy="drop_oldest") as events:
        while not predicate(session.state):
            await events.receive()


def ended(s: trio_agent.State) -> bool:
    return s.status in ("done", "error")


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: (s.start_time or 0, s.name)):
        out.setdefault(span.name, []).append(span)
    return out


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def events_of(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.attributes or {})) for e in span.events]


def started(session: Session, run: int) -> float:
    (event,) = [e for e in session.log if isinstance(e, ev.RunStarted) and e.run == run]
    return event.ts


# ---- one run -----------------------------------------------------------------------------


async def test_a_run_with_parallel_tools_is_one_trace_of_genai_spans(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exporter = InMemorySpanExporter()
    script = (
        ScriptBuilder()
        .turn(
            ["Let me", " check."],
            tool_calls=[
                call("c1", "sleep", seconds=1),
                call("c2", "sleep", seconds=2),
            ],
        )
        .turn(["Done."])
    )
    async with traced(script.model(), exporter) as session:
        await session.send("go")
        await until(session, ended)
        key = run_key("s1", 1, started(session, 1))
    spans = by_name(exporter.get_finished_spans())
    assert sorted(spans) == ["chat scripted", "execute_tool sleep", "invoke_agent trio-agent"]
    (agent,) = spans["invoke_agent trio-agent"]
    chats, tools = spans["chat scripted"], spans["execute_tool sleep"]
    assert (len(chats), len(tools)) == (2, 2)
    # One trace, with the ids every process derives from the log.
    assert {s.context.trace_id for s in [agent, *chats, *tools]} == {trace_id(key)}
    assert agent.parent is None and agent.context.span_id == span_id(key, "invoke_agent")
    assert all(s.parent is not None and s.parent.span_id == agent.context.span_id for s in chats)
    assert [s.context.span_id for s in chats] == [span_id(key, "chat", 1), span_id(key, "chat", 2)]
    assert {s.context.span_id for s in tools} == {
        span_id(key, "execute_tool", 1, "c1"),
        span_id(key, "execute_tool", 1, "c2"),
    }
    assert (agent.kind, chats[0].kind, tools[0].kind) == (
        SpanKind.INTERNAL,
        SpanKind.CLIENT,
        SpanKind.INTERNAL,
    )
    run_attrs = attrs(agent)
    for usage in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        # (the scripted model counts words): the run's usage is its calls' sum
        assert run_attrs.pop(usage) == sum(attrs(c)[usage] for c in chats) > 0
    assert run_attrs == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "trio-agent",
        "gen_ai.conversation.id": "s1",
        "gen_ai.provider.name": "trio_agent.scripted",
        "gen_ai.request.model": "scripted",
        "trio_agent.run": 1,
    }
    first = attrs(chats[0])
    assert first.pop("gen_ai.response.time_to_first_chunk") >= 0
    assert first == {
        "gen_ai.operation.name": "chat",
        "gen_ai.conversation.id": "s1",
        "gen_ai.provider.name": "trio_agent.scripted",
        "gen_ai.request.model": "scripted",
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "gen_ai.usage.input_tokens": 1,
        "gen_ai.usage.output_tokens": 2,
        "trio_agent.step": 1,
    }
    assert attrs(chats[1])["gen_ai.response.finish_reasons"] == ("stop",)
    assert [attrs(t)["gen_ai.tool.call.id"] for t in tools] == ["c1", "c2"]
    assert attrs(tools[0])["gen_ai.tool.name"] == "sleep"
    assert all(s.status.status_code is StatusCode.UNSET for s in [agent, *chats, *tools])
    # The calls ran in parallel: each began before either ended; the run's span holds all.
    assert max(t.start_time or 0 for t in tools) <= min(t.end_time or 0 for t in tools)
    assert all(
        (agent.start_time or 0) <= (s.start_time or 0) <= (s.end_time or 0) <= (agent.end_time or 0)
        for s in [*chats, *tools]
    )
    # No content unless asked for.
    assert not any(
        k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call.a"))
        for s in [agent, *chats, *tools]
        for k in attrs(s)
    )


async def test_a_hard_interrupt_and_its_resume_stay_in_the_runs_trace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exporter = InMemorySpanExporter()
    script = (
        ScriptBuilder()
        .turn(["w "] * 20, delay=0.1)  # cut by the hard interrupt
        .turn(["I"], tool_calls=[call("c1", "sleep", seconds=30)])  # cut during the call
        .turn(["Done."])
    )
    async with traced(script.model(), exporter) as session:
        await session.send("go")
        await until(session, lambda s: len(str(s.text)) > 4)
        await session.interrupt("hard", reason="wrong way")
        await until(session, lambda s: s.status == "interrupted")
        await session.resume("use the tool")
        await until(
            session,
            lambda s: (
                s.status == "acting"
                and s.seq > 0
                and any(c.status == "running" for c in s.tool_calls)
            ),
        )
        await session.interrupt("hard", reason="too slow")
        await until(session, lambda s: s.status == "interrupted")
        await session.send("go on")  # (a message resumes an interrupted run)
        await until(session, ended)
        key = run_key("s1", 1, started(session, 1))
    spans = by_name(exporter.get_finished_spans())
    (agent,) = spans["invoke_agent trio-agent"]
    chats = spans["chat scripted"]
    (tool_span,) = spans["execute_tool sleep"]
    assert {s.context.trace_id for s in [agent, *chats, tool_span]} == {trace_id(key)}
    assert [attrs(c)["trio_agent.step"] for c in chats] == [1, 2, 3]
    assert attrs(chats[0])["error.type"] == "cancelled"  # the model call that was cut
    assert chats[0].status.status_code is StatusCode.ERROR
    assert "error.type" not in attrs(chats[1])  # its stream ended; the tool call was cut
    assert attrs(tool_span)["error.type"] == "cancelled"
    assert "hard interrupt: too slow" in (tool_span.status.description or "")
    assert [name for name, _ in events_of(agent)] == [
        "interrupt",
        "interrupted",
        "resume",
        "interrupt",
        "interrupted",
        "resume",
    ]
    interrupt, paused = events_of(agent)[:2]
    assert interrupt[1] == {"trio_agent.interrupt.mode": "hard", "trio_agent.reason": "wrong way"}
    assert paused[1]["trio_agent.step"] == 1
    assert "error.type" not in attrs(agent)  # the run completed


async def test_failures_set_error_type_on_the_spans_they_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Failing:
        """A model that streams a word, then fails as a provider would."""

        provider_name = "openai"
        model_name = "gpt-test"

        async def stream(
            self, messages: Sequence[Message], tools: Sequence[ToolSpec]
        ) -> AsyncIterator[Chunk]:
            yield TextDelta("Hm")
            raise ModelError("server_error", "the provider answered 500")

        async def aclose(self) -> None:
            pass

    exporter = InMemorySpanExporter()
    async with traced(Failing(), exporter) as session:
        await session.send("go")
        await until(session, ended)
    spans = by_name(exporter.get_finished_spans())
    (agent,), (chat,) = spans["invoke_agent trio-agent"], spans["chat gpt-test"]
    assert attrs(chat)["gen_ai.provider.name"] == "openai"
    assert attrs(chat)["error.type"] == "server_error"
    assert chat.status.description == "the provider answered 500"
    assert attrs(agent)["error.type"] == "server_error"
    assert agent.status.status_code is StatusCode.ERROR

    exporter = InMemorySpanExporter()
    script = ScriptBuilder().turn([], tool_calls=[call("c1", "calculator", expression="1/0")])
    async with traced(script.turn(["Sorry."]).model(), exporter) as session:
        await session.send("divide")
        await until(session, ended)
    (calc,) = by_name(exporter.get_finished_spans())["execute_tool calculator"]
    assert attrs(calc)["error.type"] == "error"
    assert calc.status.status_code is StatusCode.ERROR


async def test_approvals_are_events_of_the_tool_span_and_a_denial_its_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exporter = InMemorySpanExporter()
    script = (
        ScriptBuilder()
        .turn([], tool_calls=[call("c1", "delete", path="/a"), call("c2", "delete", path="/b")])
        .turn(["Ok."])
    )
    async with traced(script.model(), exporter) as session:
        await session.send("clean up")
        await until(session, lambda s: len(s.pending_approvals) == 2)
        await session.approve("c1")
        await session.deny("c2", "not that one")
        await until(session, ended)
    yes, no = sorted(
        by_name(exporter.get_finished_spans())["execute_tool delete"],
        key=lambda s: attrs(s)["gen_ai.tool.call.id"],
    )
    assert [name for name, _ in events_of(yes)] == ["tool_approval_requested", "tool_approval"]
    assert events_of(yes)[1][1] == {"trio_agent.approval.approved": True, "trio_agent.reason": ""}
    assert "error.type" not in attrs(yes)
    assert events_of(no)[1][1] == {
        "trio_agent.approval.approved": False,
        "trio_agent.reason": "not that one",
    }
    assert attrs(no)["error.type"] == "denied"


async def test_content_is_recorded_only_when_opted_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exporter = InMemorySpanExporter()
    script = (
        ScriptBuilder()
        .turn(["Let me."], tool_calls=[call("c1", "calculator", expression="6*7")])
        .turn(["42."])
    )
    async with traced(script.model(), exporter, capture_content=True) as session:
        await session.send("what is 6*7?")
        await until(session, ended)
    spans = by_name(exporter.get_finished_spans())
    (agent,), (calc,) = spans["invoke_agent trio-agent"], spans["execute_tool calculator"]
    first, second = spans["chat scripted"]
    assert orjson.loads(attrs(agent)["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "what is 6*7?"}]}
    ]
    assert orjson.loads(attrs(agent)["gen_ai.output.messages"])[0]["parts"][0]["content"] == "42."
    assert orjson.loads(attrs(first)["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Let me."},
                {
                    "type": "tool_call",
                    "id": "c1",
                    "name": "calculator",
                    "arguments": {"expression": "6*7"},
                },
            ],
            "finish_reason": "tool_calls",
        }
    ]
    # The second call's input is the conversation so far, the tool's result included.
    roles = [m["role"] for m in orjson.loads(attrs(second)["gen_ai.input.messages"])]
    assert roles == ["user", "assistant", "tool"]
    assert orjson.loads(attrs(calc)["gen_ai.tool.call.arguments"]) == {"expression": "6*7"}
    assert orjson.loads(attrs(calc)["gen_ai.tool.call.result"]) == 42


async def test_content_capture_stops_at_a_gap_in_the_log(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A tracer that re-attaches past events trimmed away cannot fold the conversation
    from there: the spans still come, without content, rather than with a wrong one
    (a missing token is legal to the reducer: only the gap in seq shows it)."""
    script = ScriptBuilder().turn(["one."]).turn(["two."])
    async with trio_agent.open_runtime(model=script.model(), tools=TOOLS) as runtime:
        session = await runtime.open_session("s1")
        for run, text in enumerate(("first", "second"), start=1):
            await session.send(text)
            await until(session, lambda s, run=run: s.status == "done" and s.run == run)
        log = list(session.log)
    (lost,) = [e.seq for e in log if isinstance(e, ev.TokenStream) and e.run == 1]
    chats: list[list[ReadableSpan]] = []
    for skipped in (0, lost):  # (0: nothing skipped)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        builder = TraceBuilder(
            provider.get_tracer("test"), "s1", agent_name="a", capture_content=True
        )
        for event in log:
            if event.seq != skipped:  # (run 1's token trimmed away: the reducer cannot tell)
                builder.feed(event, True)
        spans = [s for s in exporter.get_finished_spans() if s.name.startswith("chat")]
        chats.append(sorted(spans, key=lambda s: s.start_time or 0))

    def said_before(span: ReadableSpan) -> Any:
        """What the assistant had said, as the call's input shows it (None: no input)."""
        text = attrs(span).get("gen_ai.input.messages")
        if text is None:
            return None
        return [m["parts"][0]["content"] for m in orjson.loads(text) if m["role"] == "assistant"]

    whole, with_gap = chats
    assert [said_before(s) for s in whole] == [[], ["one."]]
    assert [said_before(s) for s in with_gap] == [[], None]  # none, not a wrong one


# ---- a tracer that falls behind ----------------------------------------------------------


class Gated:
    """A session as a tracer reads it (``TracedSession``), whose first subscription is
    read only once ``gate`` is set: the tracer falls behind for real, and the bus evicts
    it.  Its later subscriptions are the session's own."""

    def __init__(self, session: Session, gate: trio.Event) -> None:
        self.session = session
        self.gate = gate
        self.opened: list[dict[str, Any]] = []

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def log(self) -> trio_agent.EventLog:
        return self.session.log

    @property
    def owner_since(self) -> int | None:
        return self.session.owner_since

    def open_subscription(self, **kwargs: Any) -> Subscription:
        self.opened.append(kwargs)
        sub = self.session.open_subscription(**kwargs)
        if len(self.opened) > 1:
            return sub
        gate, receive_batch = self.gate, sub.receive_batch

        async def gated(max_events: int | None = None) -> list[ev.Event]:
            await gate.wait()
            return await receive_batch(max_events)

        sub.receive_batch = gated  # type: ignore[method-assign]
        return sub


async def test_an_evicted_tracer_reattaches_from_the_log_and_loses_no_span(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = SessionTracer(provider, capacity=2, stall_timeout=1.0)
    gate = trio.Event()
    gated: list[Gated] = []

    async def observe(session: Session) -> None:
        gated.append(Gated(session, gate))
        await tracer(gated[-1])

    script = ScriptBuilder().turn(["a"], tool_calls=[call("c1", "sleep", seconds=1)]).turn(["b"])
    async with trio_agent.open_runtime(
        model=script.model(), tools=TOOLS, observers=[observe]
    ) as runtime:
        session = await runtime.open_session("s1")
        await trio.testing.wait_all_tasks_blocked()  # the tracer attached (live: no log yet)
        await session.send("go")
        await until(session, ended)  # the run went on: the stalled tracer did not hold it
        assert any(s.evicted for s in session.statistics().subscribers)
        assert exporter.get_finished_spans() == ()
        gate.set()
    assert tracer.evictions == 1
    assert gated[0].opened[1]["after"] == 2  # re-attached after the last event it read
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == [
        "chat scripted",
        "chat scripted",
        "execute_tool sleep",
        "invoke_agent trio-agent",
    ]
