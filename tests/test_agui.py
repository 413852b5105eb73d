"""AG-UI over SSE: ``POST /agui`` and ``GET /agui/{threadId}``, against a real server on
127.0.0.1 with httpx and httpx-sse as the client.

Every event of every stream is validated with the official Python models
(``ag-ui-protocol``: ``ag_ui.core.Event``), and every scenario's streams — text,
parallel tool calls, reasoning, a hard interrupt and its resume, approvals, an error,
a steering ``POST``, a rejoin — go through the official TypeScript client's own
inbound pipeline in node (``tests/agui/verify.mjs``: its SSE parser, schema enforcement
and ``verifyEvents``), from the bytes the server sent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio
from ag_ui.core import Event as AGUIEvent
from httpx_sse import aconnect_sse
from pydantic import TypeAdapter
from test_server import NAPPING, TOKENS, GatedModel, Served, serving

import trio_agent
from trio_agent import events as ev
from trio_agent.errors import ModelError
from trio_agent.models import (
    Chunk,
    Finish,
    Message,
    ReasoningDelta,
    ReasoningEnd,
    TextDelta,
    ToolSpec,
)
from trio_agent.testing import ScriptBuilder, ScriptedModel

pytestmark = pytest.mark.timeout(30)

NODE_CHECK: Final = Path(__file__).parent / "agui"
VALIDATE: Final = TypeAdapter(AGUIEvent)


class Tee(httpx.AsyncByteStream):
    """A response body that keeps every byte read from it."""

    def __init__(self, inner: httpx.AsyncByteStream, sink: bytearray) -> None:
        self.inner = inner
        self.sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.sink += chunk
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class Recording(httpx.AsyncBaseTransport):
    """httpx's own transport, each response body kept as it was sent (``bodies``)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[bytearray] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        self.bodies.append(bytearray())
        response.stream = Tee(response.stream, self.bodies[-1])
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class AGUI:
    """A client of one server's AG-UI endpoints, recording what it was sent."""

    def __init__(self, s: Served, client: httpx.AsyncClient, recording: Recording) -> None:
        self.s = s
        self.client = client
        self.recording = recording

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, **options: Any
    ) -> AsyncIterator[AsyncIterator[tuple[str, dict[str, Any]]]]:
        """The AG-UI events of one response, each with its SSE id, validated."""
        async with aconnect_sse(self.client, method, url, **options) as source:
            assert source.response.status_code == 200, await source.response.aread()

            async def events() -> AsyncIterator[tuple[str, dict[str, Any]]]:
                async for message in source.aiter_sse():
                    if message.data:  # (comments and field-only messages carry none)
                        VALIDATE.validate_json(message.data)  # the official models
                        yield message.id, json.loads(message.data)

            yield events()

    async def run(self, thread: str, run_id: str, **input: Any) -> list[dict[str, Any]]:
        """``POST /agui`` and every event of the answer."""
        async with self.stream("POST", "/agui", json=run_input(thread, run_id, **input)) as got:
            return [e async for _, e in got]

    def body(self, n: int = -1) -> bytes:
        return bytes(self.recording.bodies[n])


def run_input(thread: str, run_id: str, text: str = "go", **extra: Any) -> dict[str, Any]:
    """A ``RunAgentInput`` as the official client sends one."""
    return {
        "threadId": thread,
        "runId": run_id,
        "messages": [{"id": f"u-{run_id}", "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
        **extra,
    }


@asynccontextmanager
async def agui_server(*args: Any, **kwargs: Any) -> AsyncIterator[AGUI]:
    recording = Recording()
    async with (
        serving(*args, **kwargs) as s,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{s.port}", transport=recording, timeout=20
        ) as client,
    ):
        yield AGUI(s, client, recording)


def official_check(tmp_path: Path, *bodies: bytes) -> list[str]:
    """The official client's pipeline over ``bodies`` (one stream and those continuing
    it, concatenated): the AG-UI event types it let through."""
    node = shutil.which("node")
    if node is None or not (NODE_CHECK / "node_modules" / "@ag-ui" / "client").is_dir():
        pytest.skip("needs node and @ag-ui/client (make test runs npm ci in tests/agui)")
    path = tmp_path / f"stream{len(list(tmp_path.iterdir()))}.sse"
    path.write_bytes(b"".join(bodies))
    done = subprocess.run(
        [node, "verify.mjs", str(path)], cwd=NODE_CHECK, capture_output=True, text=True, timeout=20
    )
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    assert done.returncode == 0 and "error" not in result, result
    types: list[str] = result["types"]
    return types


def types(events: Sequence[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def deltas(events: Sequence[dict[str, Any]], kind: str = "TEXT_MESSAGE_CONTENT") -> str:
    return "".join(e["delta"] for e in events if e["type"] == kind)


class Chunks:
    """A model that streams the chunks it is given, one list per call (or raises)."""

    def __init__(self, *calls: Sequence[Chunk] | Exception) -> None:
        self.calls = list(calls)

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[Chunk]:
        call = self.calls.pop(0)
        if isinstance(call, Exception):
            raise call
        for chunk in call:
            yield chunk

    async def aclose(self) -> None:
        pass


# ---- scenarios --------------------------------------------------------------------------


async def test_text(tmp_path: Path) -> None:
    script = ScriptBuilder().turn(tokens=["Hello", ", ", "world."]).turn(tokens=["Again."])
    with trio.fail_after(20):
        async with agui_server(script) as agui:
            got = await agui.run("t-text", "r1", text="hi")
            assert types(got) == [
                "RUN_STARTED",
                "STATE_SNAPSHOT",
                "MESSAGES_SNAPSHOT",
                "STEP_STARTED",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "STEP_FINISHED",
                "RUN_FINISHED",
            ]
            assert got[0]["threadId"] == "t-text" and got[0]["runId"] == "r1"
            assert got[0]["input"]["messages"][0]["content"] == "hi"
            assert deltas(got) == "Hello, world." == got[-1]["result"]
            # The next run on the thread: the conversation so far in its snapshot.
            again = await agui.run("t-text", "r2", text="more")
            (snapshot,) = [e for e in again if e["type"] == "MESSAGES_SNAPSHOT"]
            assert [(m["role"], m.get("content")) for m in snapshot["messages"]] == [
                ("user", "hi"),
                ("assistant", "Hello, world."),
            ]
            assert deltas(again) == "Again."
            assert official_check(tmp_path, agui.body(0), agui.body(1)).count("RUN_FINISHED") == 2


async def test_parallel_tool_calls(tmp_path: Path) -> None:
    calls = [
        {"id": "c1", "name": "nap", "arguments": {"seconds": 0.01}},
        {"id": "c2", "name": "nap", "arguments": {"seconds": 0.02}},
    ]
    script = ScriptBuilder().turn(tokens=["Two naps."], tool_calls=calls).turn(tokens=["Rested."])
    with trio.fail_after(20):
        async with agui_server(script) as agui:
            got = await agui.run("t-tools", "r1")
            for call in calls:
                mine = [e for e in got if e.get("toolCallId") == call["id"]]
                assert types(mine) == [
                    "TOOL_CALL_START",
                    *["TOOL_CALL_ARGS"] * (len(mine) - 3),
                    "TOOL_CALL_END",
                    "TOOL_CALL_RESULT",
                ]
                assert mine[0]["toolCallName"] == "nap"
                assert json.loads(deltas(mine, "TOOL_CALL_ARGS")) == call["arguments"]
                assert json.loads(mine[-1]["content"]) == {"slept": call["arguments"]["seconds"]}
            steps = [e["stepName"] for e in got if e["type"] == "STEP_STARTED"]
            assert steps == ["step 1", "step 2"]
            assert got[-1]["result"] == "Rested."
            official_check(tmp_path, agui.body())


async def test_reasoning(tmp_path: Path) -> None:
    model = Chunks(
        [
            ReasoningDelta("Let me "),
            ReasoningDelta("think."),
            ReasoningEnd(signature="sig-1"),
            TextDelta("Forty-two."),
            Finish(),
        ]
    )
    with trio.fail_after(20):
        async with agui_server(model=model) as agui:
            got = await agui.run("t-reason", "r1")
            kinds = types(got)
            start = kinds.index("REASONING_START")
            assert kinds[start : start + 7] == [
                "REASONING_START",
                "REASONING_MESSAGE_START",
                "REASONING_MESSAGE_CONTENT",
                "REASONING_MESSAGE_CONTENT",
                "REASONING_MESSAGE_END",
                "REASONING_ENCRYPTED_VALUE",
                "REASONING_END",
            ]
            assert deltas(got, "REASONING_MESSAGE_CONTENT") == "Let me think."
            (sealed,) = [e for e in got if e["type"] == "REASONING_ENCRYPTED_VALUE"]
            assert sealed["encryptedValue"] == "sig-1" and sealed["subtype"] == "message"
            assert deltas(got) == "Forty-two."
            official_check(tmp_path, agui.body())


async def test_hard_interrupt_then_resume(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with agui_server(NAPPING) as agui:
            seen: list[dict[str, Any]] = []
            async with agui.stream("POST", "/agui", json=run_input("t-pause", "r1")) as got:
                async for _, e in got:
                    seen.append(e)
                    if e["type"] == "TOOL_CALL_END":  # the nap runs: stop it now
                        reply = await agui.client.post(
                            "/sessions/t-pause/commands",
                            json={"op": "interrupt", "mode": "hard", "reason": "wrong way"},
                        )
                        assert reply.status_code == 202
            customs = [e["name"] for e in seen if e["type"] == "CUSTOM"]
            assert customs == ["trio_agent.interrupt", "trio_agent.interrupted"]
            (result,) = [e for e in seen if e["type"] == "TOOL_CALL_RESULT"]
            assert result["metadata"] == {"trio_agent": {"status": "cancelled"}}
            outcome = seen[-1]["outcome"]
            (paused,) = outcome["interrupts"]
            assert outcome["type"] == "interrupt" and paused["reason"] == "paused"
            assert paused["message"].startswith("paused (hard) at step 1: wrong way")
            # The answer resumes it, with an instruction; the run starts where it ended.
            answer = {"interruptId": paused["id"], "status": "resolved"}
            resumed = await agui.run(
                "t-pause", "r2", resume=[{**answer, "payload": {"instruction": "rest less"}}]
            )
            assert resumed[1]["type"] == "CUSTOM" and resumed[1]["name"] == "trio_agent.resume"
            assert resumed[1]["value"]["instruction"] == "rest less"
            assert deltas(resumed) == "rested" and resumed[-1]["type"] == "RUN_FINISHED"
            # The same answer again (the same runId: a retry) changes nothing.
            session = agui.s.runtime.sessions["t-pause"]
            last = session.log.last_seq
            again = await agui.run(
                "t-pause", "r2", resume=[{**answer, "payload": {"instruction": "rest less"}}]
            )
            assert again[1]["value"] == resumed[1]["value"]  # the same run, told again
            assert deltas(again) == "rested" and again[-1]["type"] == "RUN_FINISHED"
            assert session.log.last_seq == last
            assert session.state.status == "done"
            official_check(tmp_path, agui.body(0), agui.body(-1))


@trio_agent.tool(approval=True)
async def delete(path: str) -> dict[str, str]:
    """Delete a file (asks first)."""
    return {"deleted": path}


async def test_approval_interrupts_answered_by_resume(tmp_path: Path) -> None:
    calls = [
        {"id": "a1", "name": "delete", "arguments": {"path": "a.txt"}},
        {"id": "a2", "name": "delete", "arguments": {"path": "b.txt"}},
    ]
    script = ScriptBuilder().turn(tokens=["Two files."], tool_calls=calls).turn(tokens=["Done."])
    model = ScriptedModel(script.build())
    with trio.fail_after(20):
        async with (
            trio_agent.open_runtime(model=model, tools=[delete]) as rt,
            trio.open_nursery() as nursery,
        ):
            server = trio_agent.AgentServer(rt)
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            recording = Recording()
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", transport=recording, timeout=20
            ) as client:
                agui = AGUI(Served(rt, server, port), client, recording)
                got = await agui.run("t-ok", "r1")
                answers = {"a1": {"approved": True}, "a2": {"approved": False, "reason": "keep it"}}
                answered = 0
                while (outcome := got[-1].get("outcome")) is not None:
                    assert outcome["type"] == "interrupt"
                    resume = []
                    for interrupt in outcome["interrupts"]:
                        assert interrupt["reason"] == "tool_approval"
                        payload = answers[interrupt["toolCallId"]]
                        resume.append(
                            {
                                "interruptId": interrupt["id"],
                                "status": "resolved",
                                "payload": payload,
                            }
                        )
                    answered += len(resume)
                    got = await agui.run("t-ok", f"r{answered + 1}", resume=resume)
                assert answered == 2 and got[-1]["result"] == "Done."
                everything = [e for body in recording.bodies for e in _parse(body)]
                results = {
                    e["toolCallId"]: (e["metadata"]["trio_agent"]["status"], e["content"])
                    for e in everything
                    if e["type"] == "TOOL_CALL_RESULT"
                }
                assert results == {
                    "a1": ("ok", '{"deleted":"a.txt"}'),
                    "a2": ("denied", "denied: keep it"),
                }
                # An answer to an interrupt that is no longer pending: 409, nothing done.
                stale = {"interruptId": "approval:a1@12", "status": "resolved"}
                reply = await client.post("/agui", json=run_input("t-ok", "late", resume=[stale]))
                assert reply.status_code == 409
                assert reply.json()["error"]["code"] == "bad_state"
                official_check(tmp_path, *(bytes(b) for b in recording.bodies[:-1]))
            nursery.cancel_scope.cancel()


def _parse(body: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[len(b"data: ") :])
        for line in body.splitlines()
        if line.startswith(b"data: ")
    ]


async def test_error(tmp_path: Path) -> None:
    model = Chunks(ModelError("server_error", "the model broke"))
    with trio.fail_after(20):
        async with agui_server(model=model) as agui:
            got = await agui.run("t-err", "r1")
            assert got[-1]["type"] == "RUN_ERROR"
            assert "the model broke" in got[-1]["message"]
            assert got[-1]["code"] == "server_error"
            assert official_check(tmp_path, agui.body())[-1] == "RUN_ERROR"


async def test_a_post_to_a_running_thread_steers_it_and_joins_its_stream(tmp_path: Path) -> None:
    model = GatedModel()
    with trio.fail_after(20):
        async with agui_server(model=model) as agui:
            async with (
                agui.stream("POST", "/agui", json=run_input("t-steer", "r1")) as first,
            ):
                model.feed(*TOKENS[:3])
                seen = []
                async for _, e in first:
                    seen.append(e)
                    if deltas(seen) == "".join(TOKENS[:3]):
                        break
                async with agui.stream(
                    "POST", "/agui", json=run_input("t-steer", "r2", text="shorter")
                ) as second:
                    joined = []
                    async for _, e in second:
                        joined.append(e)
                        if e["type"] == "TEXT_MESSAGE_CONTENT":
                            break  # the text so far, as one delta
                    assert deltas(joined) == "".join(TOKENS[:3])
                    model.feed(*TOKENS[3:6])
                    model.finish()
                    model.finish()  # (the step the steering message gets: no text)
                    joined += [e async for _, e in second]
                seen += [e async for _, e in first]
            # The first stream sees the steering message; the second does not echo its own.
            steer = [e for e in seen if e["type"] == "CUSTOM"]
            assert [(e["name"], e["value"]["text"]) for e in steer] == [
                ("trio_agent.user_input", "shorter")
            ]
            assert not [e for e in joined if e["type"] == "CUSTOM"]
            assert deltas(seen) == deltas(joined) == "".join(TOKENS[:6])
            assert seen[-1]["type"] == joined[-1]["type"] == "RUN_FINISHED"
            official_check(tmp_path, agui.body(0))
            official_check(tmp_path, agui.body(1))


async def test_a_dropped_stream_rejoins_with_last_event_id(tmp_path: Path) -> None:
    model = GatedModel()
    with trio.fail_after(20):
        async with agui_server(model=model) as agui:
            prefix: list[tuple[str, dict[str, Any]]] = []
            async with agui.stream("POST", "/agui", json=run_input("t-rejoin", "r1")) as first:
                model.feed(*TOKENS[:2])
                async for found in first:
                    prefix.append(found)
                    if found[1]["type"] == "TEXT_MESSAGE_START":
                        break  # dropped right after the message opened ("<seq>.1")
            cut_id = prefix[-1][0]
            assert cut_id.endswith(".1")
            model.feed(*TOKENS[2:5])
            model.finish()
            url = "/agui/t-rejoin"
            async with agui.stream("GET", url, headers={"last-event-id": cut_id}) as rest:
                after = [e async for _, e in rest]
            assert after[0]["type"] == "TEXT_MESSAGE_CONTENT"  # the rest of that event
            whole = [e for _, e in prefix] + after
            assert deltas(whole) == "".join(TOKENS[:5]) and whole[-1]["type"] == "RUN_FINISHED"
            # What the client had, then the rejoined rest: one valid run to the official
            # client (the first body was cut where this client stopped reading).
            sent = _until(agui.body(0), cut_id)
            assert official_check(tmp_path, sent, agui.body(1)).count("RUN_STARTED") == 1
            # Rejoining after the end: nothing more; an id no run holds: 409.
            end_id = str(agui.s.runtime.sessions["t-rejoin"].log.last_seq)
            async with agui.stream("GET", url, headers={"last-event-id": end_id}) as rest:
                assert [e async for _, e in rest] == []
            reply = await agui.client.get(url, headers={"last-event-id": "999"})
            assert reply.status_code == 409
            assert reply.json()["error"]["code"] == "cannot_resume"
            # Without an id it joins the thread as it is: nothing going, a run that ends.
            async with agui.stream("GET", url) as now:
                assert types([e async for _, e in now]) == [
                    "RUN_STARTED",
                    "STATE_SNAPSHOT",
                    "MESSAGES_SNAPSHOT",
                    "RUN_FINISHED",
                ]


def _until(body: bytes, last_id: str) -> bytes:
    """``body`` through the message whose id is ``last_id``."""
    marker = f"id: {last_id}\n".encode()
    start = body.index(marker)
    return body[: body.index(b"\n\n", start) + 2]


async def test_bad_inputs_are_refused_with_an_error_object() -> None:
    with trio.fail_after(20):
        async with agui_server() as agui:

            async def answer(body: Any) -> tuple[int, str, str]:
                reply = await agui.client.post("/agui", json=body)
                error = reply.json()["error"]
                return reply.status_code, error["code"], error["message"]

            status, code, message = await answer({"threadId": "t"})
            assert (status, code) == (400, "bad_input") and message.startswith(
                "not a RunAgentInput: "
            )
            assert await answer(run_input("bad id!", "r")) == (
                400,
                "bad_command",
                "threadId: invalid session id 'bad id!': use 1 to 64 characters from "
                "A-Z a-z 0-9 _ . -",
            )
            no_user = {**run_input("t", "r"), "messages": []}
            assert await answer(no_user) == (
                400,
                "bad_command",
                "nothing to run: the last message must be the user's, got nothing",
            )
            unknown = run_input("t", "r", resume=[{"interruptId": "x", "status": "resolved"}])
            assert await answer(unknown) == (400, "bad_command", "unknown interrupt 'x'")
            # A seq no int() should read (thousands of digits): refused, not a dead handler.
            huge = "approval:c1@" + "9" * 5000
            status, code, message = await answer(
                run_input("t", "r", resume=[{"interruptId": huge, "status": "resolved"}])
            )
            assert (status, code) == (400, "bad_command")
            assert message == f"unknown interrupt {huge[:80]!r}… (5012 characters)"
            # One command's text is bounded as on the WebSocket (max_frame_size).
            limit = agui.s.server.limits.max_frame_size
            assert await answer(run_input("t", "r", "x" * (limit + 1))) == (
                413,
                "too_large",
                f"the last user message is {limit + 1} characters, over the limit of {limit} "
                "(max_frame_size: one command's text, as on the WebSocket)",
            )
            too_long = run_input(
                "t",
                "r",
                resume=[
                    {
                        "interruptId": "approval:c1@3",
                        "status": "resolved",
                        "payload": {"approved": False, "reason": "x" * (limit + 1)},
                    }
                ],
            )
            status, code, message = await answer(too_long)
            assert (status, code) == (413, "too_large") and message.startswith(
                f"the reason is {limit + 1} characters"
            )
            assert agui.s.runtime.get_session("t") is None  # nothing was applied


async def test_a_run_is_kept_for_rejoining_by_its_conversation_not_its_body() -> None:
    """A client may post its whole history (20,000 messages, about a megabyte): the run
    kept for rejoining weighs the session's conversation, without the input it echoed."""
    history = [{"id": f"m{i}", "role": "user", "content": "x"} for i in range(20_000)]
    with trio.fail_after(30):
        async with agui_server(ScriptBuilder().turn(["ok"]).turn(["again"])) as agui:
            for run_id in ("r1", "r2"):
                body = {**run_input("t-big", run_id), "messages": history}
                assert len(json.dumps(body)) > 900_000
                async with agui.stream("POST", "/agui", json=body) as got:
                    sent = [found async for found in got]
                first_id, first = sent[0]
                assert first["type"] == "RUN_STARTED" and len(first["input"]["messages"])
            runs = agui.s.server.agui_runs
            assert len(runs) == 2 and runs.bytes < 16_384
            # What is kept still serves a rejoin: the second run's stream after its
            # RUN_STARTED is the rest of its prelude, then the run.
            headers = {"last-event-id": first_id}
            async with agui.stream("GET", "/agui/t-big", headers=headers) as rejoined:
                again = [e async for _, e in rejoined]
            assert again == [e for _, e in sent[1:]]


def test_the_runs_kept_for_rejoining_are_bounded_in_bytes() -> None:
    """Sans-I/O: past the budget the least recently used thread's oldest run goes first;
    a single run over the budget is still kept (the newest is what a client rejoins)."""
    from trio_agent.transports.agui_runs import AGUIRun, AGUIRuns

    def run(thread: str, start: int, size: int) -> AGUIRun:
        return AGUIRun(thread, f"r{start}", start, (), None, size=size)  # type: ignore[arg-type]

    runs = AGUIRuns(threads=10, per_thread=2, max_bytes=100)
    for i, thread in enumerate(["a", "b", "a", "c"]):
        runs.add(run(thread, i * 10, 30))
    assert (len(runs), runs.bytes) == (3, 90)  # b went: the least recently used thread
    assert runs.find("b", 10) is None and runs.find("a", 0) is not None
    runs.add(run("a", 40, 30))  # a's third: its oldest goes (per_thread)
    assert (len(runs), runs.bytes) == (3, 90)
    assert runs.find("a", 0) is None
    assert [runs.find(t, s) is not None for t, s in (("a", 20), ("a", 40), ("c", 30))] == [
        True,
        True,
        True,
    ]
    runs.add(run("d", 50, 500))
    assert (len(runs), runs.bytes) == (1, 500) and runs.find("d", 50) is not None


def test_the_mapping_closes_what_it_opened_and_replays_the_same() -> None:
    """Sans-I/O: a call cut while its arguments streamed is closed before its result, the
    run's end closes the step, and a copy of the mapper goes on as the original would."""
    from trio_agent.transports.agui_mapping import AGUIMapper

    def stamped(seq: int, e: ev.Event) -> ev.Event:
        return e.stamped("t", seq, 1.5)

    events = [
        ev.Thinking(run=1, step=1),
        ev.TokenStream(run=1, step=1, text="a"),
        ev.ToolCallStart(run=1, step=1, call_id="c", name="nap"),
        ev.ToolCallDelta(run=1, step=1, call_id="c", delta='{"sec'),
        ev.ToolResult(run=1, step=1, call_id="c", status="cancelled", error="stopped"),
        ev.Done(run=1, step=1, status="cancelled"),
    ]
    mapper = AGUIMapper("t", "r", start=0)
    made = [mapper.map(stamped(seq, e)) for seq, e in enumerate(events[:-1], 1)]
    twin = mapper.copy()
    made.append(mapper.map(stamped(6, events[-1])))
    assert [[x.type.value for x in group] for group in made] == [
        ["STEP_STARTED"],
        ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"],
        ["TEXT_MESSAGE_END", "TOOL_CALL_START"],
        ["TOOL_CALL_ARGS"],
        ["TOOL_CALL_END", "TOOL_CALL_RESULT"],
        ["STEP_FINISHED", "RUN_FINISHED"],
    ]
    assert made[-1][-1].outcome is not None and made[-1][-1].outcome.type == "cancelled"
    assert all(x.timestamp == 1500 for group in made for x in group)
    assert mapper.finished and mapper.ended_at == 6 and mapper.map(stamped(7, events[0])) == []
    assert not twin.finished
    assert [x.model_dump() for x in twin.map(stamped(6, events[-1]))] == [
        x.model_dump() for x in made[-1]
    ]


async def test_the_official_client_runs_against_the_server() -> None:
    """@ag-ui/client's HttpAgent in node, live: a run that asks twice for approval,
    answered through the client's own buildResumeArray (one approved, one denied)."""
    node = shutil.which("node")
    if node is None or not (NODE_CHECK / "node_modules" / "@ag-ui" / "client").is_dir():
        pytest.skip("needs node and @ag-ui/client (make test runs npm ci in tests/agui)")
    calls = [
        {"id": "a1", "name": "delete", "arguments": {"path": "a.txt"}},
        {"id": "a2", "name": "delete", "arguments": {"path": "b.txt"}},
    ]
    script = ScriptBuilder().turn(tokens=["Two files."], tool_calls=calls).turn(tokens=["Done."])
    with trio.fail_after(25):
        async with (
            trio_agent.open_runtime(model=ScriptedModel(script.build()), tools=[delete]) as rt,
            trio.open_nursery() as nursery,
        ):
            server = trio_agent.AgentServer(rt)
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            ran = await trio.run_process(
                [
                    node,
                    "run.mjs",
                    f"http://127.0.0.1:{port}",
                    "t-live",
                    "delete both",
                    "approve",
                    "deny:keep b",
                ],
                cwd=NODE_CHECK,
                capture_stdout=True,
                check=False,
            )
            status = rt.sessions["t-live"].state.status
            nursery.cancel_scope.cancel()
    result = json.loads(ran.stdout)
    assert ran.returncode == 0 and "error" not in result, result
    outcomes = result["outcomes"]
    assert outcomes[-1] == "success" and set(outcomes[:-1]) == {"interrupt"}
    texts = [m["content"] for m in result["messages"] if m["role"] == "assistant" and m["content"]]
    assert texts == ["Two files.", "Done."]
    tools = {m["toolCallId"]: m["content"] for m in result["messages"] if m["role"] == "tool"}
    assert tools == {"a1": '{"deleted":"a.txt"}', "a2": "denied: keep b"}
    assert status == "done"
