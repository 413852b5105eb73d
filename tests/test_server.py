"""The WebSocket transport: ops in every state, reconnect, fan-out, eviction, bad input,
limits, auth and origin checks — against a real server on 127.0.0.1, port 0.

Real sockets, real time: the virtual clock would jump while a task waits on the kernel.
So nothing here is ordered by sleeping or asserts how long something took: a run that
must still be going when the test acts is driven by a :class:`GatedModel`, a step that
must have happened is waited for as an event (:func:`published`), and every test is
bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import h11
import orjson
import pytest
import trio
import trio.testing
import wsproto
import wsproto.events as wse
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

import trio_agent
from trio_agent import events as ev
from trio_agent._core import wire
from trio_agent.cli.serve import add_serve_arguments, limits_from_args, serve_command
from trio_agent.models import Chunk, Finish, Message, Model, TextDelta, ToolSpec
from trio_agent.testing import ScriptBuilder, ScriptedModel, check_invariants
from trio_agent.transports import AgentServer, ServerLimits, serve_websocket
from trio_agent.transports.idle import IdleSessions

pytestmark = pytest.mark.timeout(30)

Event = dict[str, Any]


@trio_agent.tool
async def nap(seconds: float) -> dict[str, float]:
    """Sleep for a while (a slow tool to interrupt)."""
    await trio.sleep(seconds)
    return {"slept": seconds}


TOKENS = [f"tok{i} " for i in range(40)]
SLOW = ScriptBuilder().turn(tokens=TOKENS, delay=0.02).turn(tokens=["second run"])
NAPPING = (
    ScriptBuilder()
    .turn(
        tokens=["let me nap"],
        tool_calls=[{"id": "n1", "name": "nap", "arguments": {"seconds": 60}}],
    )
    .turn(tokens=["rested"])
    .turn(tokens=["again"])
)


class GatedModel:
    """A model that streams what the test hands it, when the test hands it: every call
    streams the tokens given to ``feed`` and ends at ``finish``.  A run stays mid-stream
    for as long as the test needs, however slow the machine (a scripted delay is only a
    guess at how long the test's next step takes)."""

    FEED_BUFFER: Final = 64
    """Tokens fed and not yet streamed: more than any test feeds at once."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[str | None](self.FEED_BUFFER)

    def feed(self, *tokens: str) -> None:
        for token in tokens:
            self._send.send_nowait(token)

    def finish(self) -> None:
        self._send.send_nowait(None)

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[Chunk]:
        while (token := await self._receive.receive()) is not None:
            yield TextDelta(token)
        yield Finish()

    async def aclose(self) -> None:
        pass


async def published(session: trio_agent.Session, seq: int) -> None:
    """Return once ``session``'s log holds the event ``seq``."""
    async with session.subscribe() as events:
        while session.log.last_seq < seq:
            await events.receive()


@attrs.define
class Served:
    runtime: trio_agent.Runtime
    server: AgentServer
    port: int

    def url(self, session: str = "s1", query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/sessions/{session}" + (f"?{query}" if query else "")


@asynccontextmanager
async def serving(
    script: ScriptBuilder = SLOW,
    *,
    model: Model | None = None,
    limits: ServerLimits | None = None,
    runtime_options: dict[str, Any] | None = None,
    **server_options: Any,
) -> AsyncIterator[Served]:
    model = model or ScriptedModel(script.build())
    async with (
        trio_agent.open_runtime(model=model, tools=[nap], **(runtime_options or {})) as rt,
        trio.open_nursery() as nursery,
    ):
        server = AgentServer(rt, limits=limits or ServerLimits(), **server_options)
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield Served(rt, server, port)
        nursery.cancel_scope.cancel()


async def frame(ws: WebSocketConnection) -> list[Event]:
    data = await ws.get_message()
    assert isinstance(data, str)
    events = orjson.loads(data)
    assert isinstance(events, list) and events
    return events


async def until(ws: WebSocketConnection, predicate: Callable[[Event], bool]) -> list[Event]:
    """Events received up to and including the first that satisfies ``predicate``."""
    out: list[Event] = []
    while True:
        for e in await frame(ws):
            out.append(e)
            if predicate(e):
                return out


def of_type(kind: str, **fields: Any) -> Callable[[Event], bool]:
    return lambda e: e["type"] == kind and all(e.get(k) == v for k, v in fields.items())


def through(seq: int) -> Callable[[Event], bool]:
    """The event that covers ``seq`` (a merged one carries the last seq it covers)."""
    return lambda e: e["seq"] >= seq


async def command(ws: WebSocketConnection, **op: Any) -> None:
    await ws.send_message(orjson.dumps(op).decode())


async def client_error(ws: WebSocketConnection) -> Event:
    """The next client-only error (skipping session events)."""
    while True:
        for e in await frame(ws):
            if e["seq"] == 0:
                assert e["type"] == "error" and e["session"] == ""
                return e


def text_of(events: Sequence[Event]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "token_stream")


def assert_gapless(events: Sequence[Event], after: int) -> int:
    """Seqs strictly increase from ``after``; a gap is allowed only where text events
    were merged (the merged event carries the last seq it covers).  Returns the last."""
    last = after
    for e in events:
        if e["seq"] == 0:
            continue
        gap = e["seq"] - last
        assert gap >= 1, f"seq {e['seq']} after {last}: duplicate or out of order"
        if gap > 1:
            assert e["type"] in ("token_stream", "reasoning", "tool_call_delta"), (
                f"gap before seq {e['seq']} ({e['type']})"
            )
        last = e["seq"]
    return last


# ---- sans-I/O: commands and frames ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (
            b"\x00\x01",
            "binary_frame",
            "binary frames are not accepted: send commands as JSON text frames",
        ),
        ("{not json", "bad_json", None),
        ("[1, 2]", "bad_command", "a command is a JSON object, got array"),
        ('{"text": "hi"}', "bad_command", "missing field 'op'"),
        ('{"op": 7}', "bad_command", "field 'op': expected str, got number"),
        (
            '{"op": "fly"}',
            "unknown_op",
            "unknown op 'fly'; expected one of user_input, interrupt, resume, cancel, approve",
        ),
        (
            '{"op": "user_input"}',
            "bad_command",
            "missing field 'text' in 'user_input' op (expected str)",
        ),
        (
            '{"op": "user_input", "text": 5}',
            "bad_command",
            "field 'text' of 'user_input' op: expected str, got number",
        ),
        (
            '{"op": "interrupt", "mode": "gentle"}',
            "bad_command",
            "field 'mode' of 'interrupt' op: expected 'hard' or 'soft', got 'gentle'",
        ),
        (
            '{"op": "interrupt", "grace": true}',
            "bad_command",
            "field 'grace' of 'interrupt' op: expected a non-negative number or null, got bool",
        ),
        (
            '{"op": "interrupt", "grace": -1}',
            "bad_command",
            "field 'grace' of 'interrupt' op: expected a non-negative number or null, got number",
        ),
        (
            '{"op": "interrupt", "mode": "hard", "grace": 1}',
            "bad_command",
            "field 'grace' of 'interrupt' op: only a soft interrupt has a grace",
        ),
        (
            '{"op": "resume", "instruction": ["x"]}',
            "bad_command",
            "field 'instruction' of 'resume' op: expected str or null, got array",
        ),
        ('{"op": "cancel", "now": true}', "bad_command", "unknown field 'now' in 'cancel' op"),
        (
            '{"op": "approve", "approved": true}',
            "bad_command",
            "missing field 'call_id' in 'approve' op (expected str)",
        ),
        (
            '{"op": "approve", "call_id": "c1"}',
            "bad_command",
            "missing field 'approved' in 'approve' op (expected bool)",
        ),
        (
            '{"op": "approve", "call_id": "c1", "approved": "yes"}',
            "bad_command",
            "field 'approved' of 'approve' op: expected bool, got str",
        ),
        (
            '{"op": "cancel", "id": ""}',
            "bad_command",
            "field 'id' of 'cancel' op: expected a string of 1 to 64 characters, got str",
        ),
        (
            '{"op": "user_input", "text": "x", "id": 7}',
            "bad_command",
            "field 'id' of 'user_input' op: expected a string of 1 to 64 characters, got number",
        ),
    ],
)
def test_parse_command_refuses_bad_input(data: str | bytes, code: str, message: str | None) -> None:
    with pytest.raises(wire.CommandError) as info:
        wire.parse_command(data)
    assert info.value.code == code
    if message is not None:
        assert str(info.value) == message
    else:
        assert str(info.value).startswith("not valid JSON: ")


def test_parse_command_accepts_every_op() -> None:
    assert wire.parse_command('{"op": "user_input", "text": "hi"}') == wire.UserInput("hi")
    assert wire.parse_command('{"op": "interrupt"}') == wire.Interrupt("soft", "", None)
    assert wire.parse_command('{"op": "interrupt", "mode": "soft", "reason": "r", "grace": 2}') == (
        wire.Interrupt("soft", "r", 2.0)
    )
    assert wire.parse_command('{"op": "interrupt", "mode": "hard"}') == wire.Interrupt("hard")
    assert wire.parse_command('{"op": "resume"}') == wire.Resume(None)
    assert wire.parse_command('{"op": "resume", "instruction": "go"}') == wire.Resume("go")
    assert wire.parse_command('{"op": "cancel"}') == wire.Cancel()
    assert wire.parse_command('{"op": "approve", "call_id": "c1", "approved": true}') == (
        wire.Approve("c1", True)
    )
    assert wire.parse_command(
        '{"op": "approve", "call_id": "c1", "approved": false, "reason": "no", "id": "k"}'
    ) == wire.Approve("c1", False, "no", id="k")
    assert wire.parse_command('{"op": "cancel", "id": "x" }') == wire.Cancel(id="x")


@pytest.mark.parametrize(
    "command",
    [
        wire.UserInput("hi", id="a"),
        wire.Interrupt("soft", "r", 1.5),
        wire.Interrupt("hard", id="b"),
        wire.Resume("go", id="c"),
        wire.Resume(None),
        wire.Cancel(id="d"),
        wire.Approve("c1", False, "not now", id="e"),
    ],
)
def test_a_command_travels_to_another_process_as_itself(command: wire.Command) -> None:
    assert wire.parse_command(orjson.dumps(wire.command_to_wire(command)).decode()) == command


def _stamped(seq: int, e: ev.Event) -> ev.Event:
    return attrs.evolve(e, session="s", seq=seq, ts=float(seq))


def test_merge_events_concatenates_runs_and_keeps_the_last_seq() -> None:
    events = [
        _stamped(1, ev.Thinking(run=1, step=1)),
        _stamped(2, ev.TokenStream(run=1, step=1, text="Hel")),
        _stamped(3, ev.TokenStream(run=1, step=1, text="lo")),
        _stamped(4, ev.TokenStream(run=1, step=1, text=" ✓")),
        _stamped(5, ev.ToolCallStart(run=1, step=1, call_id="c", name="nap")),
        _stamped(6, ev.ToolCallDelta(run=1, step=1, call_id="c", delta='{"sec')),
        _stamped(7, ev.ToolCallDelta(run=1, step=1, call_id="c", delta='onds": 1}')),
        _stamped(8, ev.TokenStream(run=1, step=1, text="a")),
        _stamped(9, ev.Thinking(run=1, step=2)),
        _stamped(10, ev.TokenStream(run=1, step=2, text="b")),
    ]
    dicts, merged = wire.merge_events(events)
    assert merged == 3
    assert [(d["type"], d["seq"]) for d in dicts] == [
        ("thinking", 1),
        ("token_stream", 4),
        ("tool_call_start", 5),
        ("tool_call_delta", 7),
        ("token_stream", 8),
        ("thinking", 9),
        ("token_stream", 10),
    ]
    assert dicts[1]["text"] == "Hello ✓" and dicts[1]["ts"] == 4.0
    assert dicts[3]["delta"] == '{"seconds": 1}'
    # Events are not changed by merging (they are shared with the log).
    assert events[1].text == "Hel"  # type: ignore[attr-defined]
    frame_text, n = wire.encode_frame(events)
    assert n == 3 and orjson.loads(frame_text) == dicts


def test_tokens_of_different_steps_are_not_merged() -> None:
    events = [
        _stamped(1, ev.TokenStream(run=1, step=1, text="a")),
        _stamped(2, ev.TokenStream(run=1, step=2, text="b")),
        _stamped(3, ev.TokenStream(run=2, step=2, text="c")),
    ]
    dicts, merged = wire.merge_events(events)
    assert merged == 0 and [d["text"] for d in dicts] == ["a", "b", "c"]


def test_a_reasoning_event_that_seals_a_block_is_never_merged() -> None:
    events = [
        _stamped(1, ev.Reasoning(run=1, step=1, text="Let me")),
        _stamped(2, ev.Reasoning(run=1, step=1, text=" think.")),
        _stamped(3, ev.Reasoning(run=1, step=1, text="", signature="sig")),
        _stamped(4, ev.Reasoning(run=1, step=1, text="", redacted="opaque")),
        _stamped(5, ev.Reasoning(run=1, step=1, text="More")),
        _stamped(6, ev.Reasoning(run=1, step=1, text=".")),
    ]
    dicts, merged = wire.merge_events(events)
    assert merged == 2
    assert [(d["seq"], d["text"], d["signature"], d["redacted"]) for d in dicts] == [
        (2, "Let me think.", None, None),
        (3, "", "sig", None),
        (4, "", None, "opaque"),
        (6, "More.", None, None),
    ]


def test_consecutive_progress_of_a_call_collapses_to_the_newest() -> None:
    def progress(seq: int, call_id: str, value: float) -> ev.Event:
        return _stamped(seq, ev.ToolProgress(run=1, step=1, call_id=call_id, progress=value))

    events = [
        progress(1, "a", 1),
        progress(2, "a", 2),
        progress(3, "a", 3),
        progress(4, "b", 1),  # another call: a run of its own
        progress(5, "a", 4),
        _stamped(6, ev.TokenStream(run=1, step=1, text="x")),
        progress(7, "a", 5),
        progress(8, "a", 6),
    ]
    dicts, merged = wire.merge_events(events)
    assert merged == 3
    assert [(d["type"], d.get("call_id"), d.get("progress"), d["seq"]) for d in dicts] == [
        ("tool_progress", "a", 3, 3),
        ("tool_progress", "b", 1, 4),
        ("tool_progress", "a", 4, 5),
        ("token_stream", None, None, 6),
        ("tool_progress", "a", 6, 8),
    ]
    # A client that folds the frame gets the state the log folds to: the newest counts.
    assert dicts[-1] == events[-1].to_dict()


def test_server_limits_are_validated() -> None:
    with pytest.raises(
        ValueError, match=r"^ServerLimits.command_rate must be a positive number, got 0$"
    ):
        ServerLimits(command_rate=0)


# ---- HTTP: the page ------------------------------------------------------------------------


async def http(port: int, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """One request with h11 over a fresh connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    req = h11.Request(method=method, target=target, headers=[("host", f"127.0.0.1:{port}")])
    await stream.send_all(conn.send(req) + conn.send(h11.EndOfMessage()))
    status, headers, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some())
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            await stream.aclose()
            return status, headers, body


async def test_the_page_and_its_assets_are_served_over_http() -> None:
    with trio.fail_after(10):
        async with serving() as s:
            status, headers, body = await http(s.port, "GET", "/")
            assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
            assert b"<title>trio-agent</title>" in body and b'src="/app.js"' in body
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            status, headers, body = await http(s.port, "GET", "/app.js")
            assert status == 200 and headers["content-type"].startswith("text/javascript")
            assert b"new WebSocket(" in body
            status, headers, body = await http(s.port, "GET", "/app.css")
            assert status == 200 and headers["content-type"].startswith("text/css")
            status, headers, body = await http(s.port, "HEAD", "/")
            assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
            assert (await http(s.port, "GET", "/nope"))[:3:2] == (404, b"not found: /nope\n")
            status, headers, _ = await http(s.port, "POST", "/")
            assert status == 405 and headers["allow"] == "GET, HEAD"
            # A plain GET of a session is its state (an upgrade there is the WebSocket).
            status, headers, body = await http(s.port, "GET", "/sessions/s1")
            assert status == 200 and headers["content-type"] == "application/json"
            assert orjson.loads(body)["type"] == "state"
            assert s.server.statistics().http_requests == 7


async def test_a_malformed_request_head_gets_400_and_the_server_carries_on() -> None:
    with trio.fail_after(10):
        async with serving() as s:
            stream = await trio.open_tcp_stream("127.0.0.1", s.port)
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            reply = b""
            while chunk := await stream.receive_some():
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 400 ")
            assert (await http(s.port, "GET", "/"))[0] == 200


# ---- the stream of events -------------------------------------------------------------------


async def test_a_state_snapshot_comes_first_then_live_events_exactly() -> None:
    with trio.fail_after(10):
        async with serving() as s, open_websocket_url(s.url()) as ws:
            (snapshot,) = await frame(ws)
            assert snapshot["type"] == "state" and snapshot["seq"] == 0
            assert snapshot["state"]["status"] == "idle" and snapshot["session"] == "s1"
            await command(ws, op="user_input", text="go")
            events = await until(ws, of_type("done"))
            assert text_of(events) == "".join(TOKENS)
            assert assert_gapless(events, 0) == s.runtime.sessions["s1"].log.last_seq
            assert events[0] == {**events[0], "type": "user_input", "text": "go", "seq": 1}
            assert events[-1]["status"] == "completed" and events[-1]["text"] == "".join(TOKENS)
            # Batched: fewer frames than events is allowed, never more.
            stats = s.server.statistics()
            assert stats.frames_sent <= 1 + len(s.runtime.sessions["s1"].log)
            assert stats.events_sent == len(s.runtime.sessions["s1"].log)
            check_invariants(list(s.runtime.sessions["s1"].log), s.runtime.sessions["s1"].state)


async def test_a_client_attaching_mid_run_gets_the_half_finished_text() -> None:
    model = GatedModel()
    with trio.fail_after(10):
        async with serving(model=model) as s, open_websocket_url(s.url()) as first:
            await frame(first)
            await command(first, op="user_input", text="go")
            model.feed(*TOKENS[:6])
            await until(first, lambda e: e["type"] == "token_stream" and "tok5 " in e["text"])
            async with open_websocket_url(s.url()) as late:
                (snapshot,) = await frame(late)
                state = snapshot["state"]
                assert state["status"] == "thinking" and state["text"] == "".join(TOKENS[:6])
                assert snapshot["seq"] == state["seq"]
                model.feed(*TOKENS[6:])
                model.finish()
                rest = await until(late, of_type("done"))
                assert rest[0]["seq"] > snapshot["seq"]
                assert_gapless(rest, snapshot["seq"])
                assert state["text"] + text_of(rest) == "".join(TOKENS)


async def test_reconnect_with_after_while_tokens_stream_misses_nothing() -> None:
    model = GatedModel()
    with trio.fail_after(15):
        async with serving(model=model) as s:
            seen: list[Event] = []
            async with open_websocket_url(s.url()) as ws:
                await frame(ws)
                await command(ws, op="user_input", text="go")
                model.feed(TOKENS[0])
                seen += await until(ws, of_type("token_stream"))
            session = s.runtime.sessions["s1"]
            # Three more connections while tokens stream, each after two tokens were
            # published with no client connected (replayed from the log), and cut after
            # one more token, live.
            for i in range(3):
                model.feed(*TOKENS[1 + 3 * i : 3 + 3 * i])
                await published(session, seen[-1]["seq"] + 2)
                async with open_websocket_url(s.url(query=f"after={seen[-1]['seq']}")) as ws:
                    seen += await until(ws, through(seen[-1]["seq"] + 2))
                    model.feed(TOKENS[3 + 3 * i])
                    seen += await until(ws, through(seen[-1]["seq"] + 1))
            model.feed(*TOKENS[10:])
            model.finish()
            async with open_websocket_url(s.url(query=f"after={seen[-1]['seq']}")) as ws:
                seen += await until(ws, of_type("done"))
            assert_gapless(seen, 0)
            assert text_of(seen) == "".join(TOKENS)
            # Every event of the log was delivered once (merged text events count for all
            # the seqs they cover).
            assert seen[-1]["seq"] == s.runtime.sessions["s1"].log.last_seq


async def test_two_clients_of_one_session_see_the_same_run() -> None:
    with trio.fail_after(10):
        async with (
            serving() as s,
            open_websocket_url(s.url()) as a,
            open_websocket_url(s.url()) as b,
        ):
            await frame(a)
            await frame(b)
            await command(b, op="user_input", text="go")
            got_a = await until(a, of_type("done"))
            got_b = await until(b, of_type("done"))
            for got in (got_a, got_b):
                assert text_of(got) == "".join(TOKENS)
                assert assert_gapless(got, 0) == s.runtime.sessions["s1"].log.last_seq
            untexted = [(e["seq"], e["type"]) for e in got_a if e["type"] != "token_stream"]
            assert untexted == [(e["seq"], e["type"]) for e in got_b if e["type"] != "token_stream"]
            assert s.server.statistics().clients_by_session == {"s1": 2}


async def test_a_disconnect_never_cancels_the_run() -> None:
    model = GatedModel()
    with trio.fail_after(10):
        async with serving(model=model) as s:
            async with open_websocket_url(s.url()) as ws:
                await frame(ws)
                await command(ws, op="user_input", text="go")
                model.feed("half ")
                await until(ws, of_type("token_stream"))
            session = s.runtime.sessions["s1"]
            assert session.state.running
            async with session.subscribe(types=["done"], after=session.log.last_seq) as done_events:
                model.feed("and the rest")
                model.finish()
                await done_events.receive()
            done = list(session.log)[-1]
            assert isinstance(done, ev.Done) and done.status == "completed"
            assert s.server.statistics().clients == 0


# ---- every op in every state ------------------------------------------------------------------


async def _to_state(s: Served, ws: WebSocketConnection, state: str) -> None:
    """Drive session s1 (a NAPPING script) into ``state``."""
    if state == "idle":
        return
    await command(ws, op="user_input", text="start")
    if state == "running":
        await until(ws, of_type("tool_call"))  # acting: the 60 s nap runs
    elif state == "interrupted":
        await until(ws, of_type("tool_call"))
        await command(ws, op="interrupt", mode="hard", reason="stop")
        await until(ws, of_type("interrupted"))
    elif state == "done":
        await until(ws, of_type("tool_call"))
        await command(ws, op="cancel")
        await until(ws, of_type("done"))


STATE_NAMES = {"idle": "idle", "running": "acting", "interrupted": "interrupted", "done": "done"}

# (state, op) -> the session events the op causes, or the bad_state message.
OP_TABLE: dict[tuple[str, str], list[str] | str] = {
    ("idle", "user_input"): ["user_input", "run_started", "thinking"],
    ("idle", "interrupt"): "can't interrupt session 's1': it is idle, not running",
    ("idle", "resume"): "can't resume session 's1': it is idle, not interrupted",
    ("idle", "cancel"): "can't cancel session 's1': it is idle, not running or interrupted",
    ("running", "user_input"): ["user_input"],
    ("running", "interrupt"): ["interrupt", "tool_result", "interrupted"],
    ("running", "resume"): "can't resume session 's1': it is acting, not interrupted",
    ("running", "cancel"): ["tool_result", "done"],
    ("interrupted", "user_input"): ["user_input", "resume", "thinking"],
    ("interrupted", "interrupt"): "can't interrupt session 's1': it is interrupted, not running",
    ("interrupted", "resume"): ["resume", "thinking"],
    ("interrupted", "cancel"): ["done"],
    ("done", "user_input"): ["user_input", "run_started", "thinking"],
    ("done", "interrupt"): "can't interrupt session 's1': it is done, not running",
    ("done", "resume"): "can't resume session 's1': it is done, not interrupted",
    ("done", "cancel"): "can't cancel session 's1': it is done, not running or interrupted",
}

OPS: dict[str, dict[str, Any]] = {
    "user_input": {"op": "user_input", "text": "more"},
    "interrupt": {"op": "interrupt", "mode": "hard", "reason": "now"},
    "resume": {"op": "resume", "instruction": "carry on"},
    "cancel": {"op": "cancel"},
}


@pytest.mark.parametrize(("state", "op"), list(OP_TABLE))
async def test_every_op_in_every_state(state: str, op: str) -> None:
    expected = OP_TABLE[(state, op)]
    with trio.fail_after(10):
        async with serving(NAPPING) as s, open_websocket_url(s.url()) as ws:
            await frame(ws)
            await _to_state(s, ws, state)
            session = s.runtime.sessions.get("s1") or await s.runtime.open_session("s1")
            assert session.state.status == STATE_NAMES[state]
            before = session.log.last_seq
            await command(ws, **OPS[op])
            if isinstance(expected, str):
                error = await client_error(ws)
                assert (error["code"], error["message"]) == ("bad_state", expected)
                assert session.log.last_seq == before  # nothing happened
                assert session.state.status == STATE_NAMES[state]
            else:
                got = await until(ws, of_type(expected[-1]))
                kinds = [e["type"] for e in got if e["seq"] > before]
                assert [k for k in kinds if k in expected] == expected
                assert got[-1]["seq"] > before
            if len(session.log):
                check_invariants(list(session.log), session.state)


async def test_soft_interrupt_with_grace_and_resume_over_the_wire() -> None:
    with trio.fail_after(10):
        async with serving(NAPPING) as s, open_websocket_url(s.url()) as ws:
            await frame(ws)
            await command(ws, op="user_input", text="start")
            await until(ws, of_type("tool_call"))
            await command(ws, op="interrupt", mode="soft", reason="later", grace=0.05)
            got = await until(ws, of_type("interrupted"))
            assert [e["mode"] for e in got if e["type"] == "interrupt"] == ["soft", "hard"]
            assert any(e["type"] == "tool_result" and e["status"] == "cancelled" for e in got)
            await command(ws, op="resume", instruction="just answer")
            got = await until(ws, of_type("done"))
            assert got[0]["type"] == "resume" and got[0]["instruction"] == "just answer"
            assert text_of(got) == "rested" and got[-1]["status"] == "completed"


# ---- bad input -------------------------------------------------------------------------------


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("{oops", "bad_json"),
    ('"just a string"', "bad_command"),
    ('{"op": "fly"}', "unknown_op"),
    ('{"op": "user_input", "text": null}', "bad_command"),
    ('{"op": "interrupt", "mode": "hard", "grace": 3}', "bad_command"),
    (b"\x89PNG", "binary_frame"),
    ("x" * 2000, "frame_too_large"),
]


async def test_bad_input_gets_an_error_for_that_client_only() -> None:
    limits = ServerLimits(max_frame_size=1000)
    with trio.fail_after(10):
        async with (
            serving(limits=limits) as s,
            open_websocket_url(s.url()) as bad,
            open_websocket_url(s.url()) as good,
        ):
            await frame(bad)
            await frame(good)
            await command(good, op="user_input", text="go")
            for data, code in BAD_FRAMES:
                await bad.send_message(data)
                error = await client_error(bad)
                assert error["code"] == code, error
                assert error["retryable"] is False and error["run"] == 0
            assert s.server.statistics().errors_sent == len(BAD_FRAMES)
            # The good client saw a clean run with no error; the bad one carries on too.
            got = await until(good, of_type("done"))
            assert not [e for e in got if e["type"] == "error"]
            assert text_of(got) == "".join(TOKENS)
            await command(bad, op="user_input", text="again")
            assert (await until(bad, of_type("done", run=2)))[-1]["text"] == "second run"


async def test_a_frame_over_the_hard_limit_closes_with_1009() -> None:
    limits = ServerLimits(max_frame_size=100, max_message_size=1000)
    with trio.fail_after(10):
        async with serving(limits=limits) as s, open_websocket_url(s.url()) as ws:
            await frame(ws)
            await ws.send_message("y" * 5000)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.get_message()
            reason = info.value.reason
            assert reason is not None and reason.code == 1009
            assert reason.reason == "Exceeded maximum message size: 1000 bytes"


# ---- limits ----------------------------------------------------------------------------------


async def test_command_rate_limit() -> None:
    # One token back every 100 s: none comes back within the test's bound, however
    # slowly the commands arrive.
    limits = ServerLimits(command_rate=0.01, command_burst=2)
    with trio.fail_after(10):
        async with serving(limits=limits) as s, open_websocket_url(s.url()) as ws:
            await frame(ws)
            for _ in range(3):
                await command(ws, op="cancel")
            codes = [(await client_error(ws))["code"] for _ in range(3)]
            assert codes == ["bad_state", "bad_state", "rate_limited"]
            await command(ws, op="cancel")
            error = await client_error(ws)
            assert error["message"] == (
                "command dropped: more than 0.01 commands/s (burst 2) on this connection "
                "(command_rate)"
            )


async def _closed(ws: WebSocketConnection) -> tuple[list[Event], int | None, str | None]:
    """Every event until the server closes, and the close code and reason."""
    events: list[Event] = []
    try:
        while True:
            events += await frame(ws)
    except ConnectionClosed as closed:
        assert closed.reason is not None
        return events, closed.reason.code, closed.reason.reason


async def test_max_connections() -> None:
    with trio.fail_after(10):
        async with serving(limits=ServerLimits(max_connections=2)) as s:
            async with open_websocket_url(s.url()) as a, open_websocket_url(s.url("s2")) as b:
                await frame(a)
                await frame(b)
                async with open_websocket_url(s.url()) as c:
                    events, code, reason = await _closed(c)
                assert code == 1013 and reason is not None and reason.startswith("max_connections")
                assert events[0]["code"] == "max_connections"
                assert events[0]["message"] == "the server already has 2 clients (max_connections)"
            async with open_websocket_url(s.url()) as d:  # room again
                assert (await frame(d))[0]["type"] == "state"


async def test_max_sessions() -> None:
    with trio.fail_after(10):
        async with serving(limits=ServerLimits(max_sessions=1)) as s:
            async with open_websocket_url(s.url("s1")) as a:
                await frame(a)
            async with open_websocket_url(s.url("s2")) as b:
                events, code, reason = await _closed(b)
            assert code == 1013 and events[0]["code"] == "max_sessions"
            assert events[0]["message"] == (
                "can't open session 's2': the server already holds 1 sessions (max_sessions)"
            )
            assert reason == "max_sessions: " + events[0]["message"]
            async with open_websocket_url(s.url("s1")) as again:  # an existing one is fine
                assert (await frame(again))[0]["type"] == "state"
            assert list(s.runtime.sessions) == ["s1"]


async def test_idle_sessions_the_server_opened_are_closed_and_their_ids_freed() -> None:
    quick = ScriptBuilder().turn(tokens=["hello"]).turn(tokens=["again"])
    limits = ServerLimits(session_idle_timeout=0.8, max_sessions=3)
    with trio.fail_after(20):
        async with serving(quick, limits=limits) as s:
            own = await s.runtime.open_session("own")  # the program's own: never expired
            async with open_websocket_url(s.url("kept")) as kept:  # watched all along
                await frame(kept)
                async with open_websocket_url(s.url("a")) as a:
                    await frame(a)
                    await command(a, op="user_input", text="hi")
                    await until(a, of_type("done"))
                    first = s.runtime.get_session("a")
                    # (asked while a is watched, so that it cannot expire meanwhile)
                    async with open_websocket_url(s.url("b")) as b:  # own, kept, a: full
                        events, code, _ = await _closed(b)
                    assert code == 1013 and events[0]["code"] == "max_sessions"
                assert first is not None
                await first.wait_closed()  # expired: no client, no run
                assert s.runtime.get_session("a") is None
                assert s.runtime.get_session("own") is own and not own.closed
                assert s.runtime.get_session("kept") is not None
                async with open_websocket_url(s.url("b")) as b:  # a's place is free
                    assert (await frame(b))[0]["type"] == "state"


async def test_idle_time_counts_from_the_last_sign_of_life(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sans-I/O: the times are given.  A session is idle from its last event, its last
    # client leaving, or the last look that found it watched — whichever is latest,
    # even when it all happened between two looks.
    model = ScriptedModel(ScriptBuilder().turn(tokens=["hi"]).build())
    async with trio_agent.open_runtime(model=model) as rt:
        quiet, visited, watched, gone = [await rt.open_session(n) for n in "abcd"]
        idle = IdleSessions(timeout=4.0)
        for s in (quiet, visited, watched, gone):
            idle.add(s, 0.0)
        assert idle.expired(1.0, {watched}) == []
        await visited.send("hello")  # a client comes, runs a turn…
        async with visited.subscribe(after=0) as events:
            async for e in events:
                if e.type == "done":
                    break
        idle.left(visited, 2.5)  # …and leaves, all between the looks at 1.0 and 2.0
        await gone.aclose()
        assert idle.expired(2.0, {watched}) == []
        assert idle.expired(4.0, {watched}) == [quiet]  # idle since 0.0
        assert idle.expired(6.0, {watched}) == []  # visited: idle since 2.5, not 2.0
        assert idle.expired(6.5, {watched}) == [visited]
        assert idle.expired(10.0, set()) == []  # watched until the look at 6.5
        assert idle.expired(10.5, set()) == [watched]
        assert quiet not in idle and gone not in idle  # forgotten once returned or closed


async def test_a_paused_session_is_not_expired() -> None:
    limits = ServerLimits(session_idle_timeout=0.3)
    with trio.fail_after(20):
        async with serving(NAPPING, limits=limits) as s:
            async with open_websocket_url(s.url("paused")) as ws:
                await frame(ws)
                await command(ws, op="user_input", text="go")
                await until(ws, of_type("tool_call"))
                await command(ws, op="interrupt", mode="hard")
                await until(ws, of_type("interrupted"))
            async with open_websocket_url(s.url("idle")) as ws:
                await frame(ws)
            idle = s.runtime.get_session("idle")
            assert idle is not None
            await idle.wait_closed()
            paused = s.runtime.get_session("paused")  # idle longer, but waiting for resume
            assert paused is not None and paused.state.status == "interrupted"
            async with open_websocket_url(s.url("paused")) as ws:
                await command(ws, op="resume")
                done = (await until(ws, of_type("done")))[-1]
            assert (done["status"], done["text"]) == ("completed", "rested")


async def test_after_beyond_the_log_and_a_trimmed_log() -> None:
    with trio.fail_after(10):
        async with serving(runtime_options={"log_max_events": 10}) as s:
            async with open_websocket_url(s.url(query="after=5")) as ws:
                events, code, reason = await _closed(ws)
            assert code == 1008 and events[0]["code"] == "bad_after"
            assert reason is not None and reason.startswith("bad_after: after=5 is beyond")
            async with open_websocket_url(s.url()) as ws:
                await frame(ws)
                await command(ws, op="user_input", text="go")
                await until(ws, of_type("done"))
            async with open_websocket_url(s.url(query="after=0")) as ws:
                events, code, reason = await _closed(ws)
            assert code == 1008 and events[0]["code"] == "log_trimmed"
            assert "trimmed from the log" in events[0]["message"]


# ---- a client that stops reading ----------------------------------------------------------------


class RawClient:
    """A WebSocket client on wsproto and a bare socket: it can set a tiny receive
    buffer, stop reading, and send any header (Host, Origin)."""

    def __init__(self, stream: trio.SocketStream, conn: wsproto.WSConnection) -> None:
        self.stream = stream
        self.conn = conn
        self.pending: list[wse.Event] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        target: str,
        *,
        host: str = "127.0.0.1",
        headers: Sequence[tuple[str, str]] = (),
        rcvbuf: int | None = None,
    ) -> tuple[RawClient, wse.Event]:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock), wsproto.WSConnection(wsproto.ConnectionType.CLIENT))
        request = wse.Request(
            host=host,
            target=target,
            extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        )
        await client.stream.send_all(client.conn.send(request))
        return client, await client.next_event()

    async def next_event(self) -> wse.Event:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.conn.receive_data(data or None)
            self.pending.extend(self.conn.events())
        return self.pending.pop(0)

    async def read_until_close(self) -> tuple[list[Event], int, str]:
        events: list[Event] = []
        text = ""
        while True:
            event = await self.next_event()
            if isinstance(event, wse.TextMessage):
                text += event.data
                if event.message_finished:
                    events += orjson.loads(text)
                    text = ""
            elif isinstance(event, wse.CloseConnection):
                return events, event.code, event.reason or ""


BIG_TOKENS = ["x" * 1000 + f"<{i}>" for i in range(1500)]


async def test_a_stalled_client_is_evicted_while_the_other_keeps_streaming() -> None:
    script = ScriptBuilder().turn(tokens=BIG_TOKENS)
    limits = ServerLimits(subscriber_capacity=4, stall_timeout=1.0)
    with trio.fail_after(20):
        # ``done`` carries the whole answer (1.5 MB here): raise the client's frame limit.
        async with (
            serving(script, limits=limits) as s,
            open_websocket_url(s.url(), max_message_size=2**23) as good,
        ):
            stalled, accept = await RawClient.connect(s.port, "/sessions/s1", rcvbuf=4096)
            assert isinstance(accept, wse.AcceptConnection)
            await frame(good)
            session = s.runtime.sessions["s1"]
            await command(good, op="user_input", text="go")
            got = await until(good, of_type("done"))
            assert text_of(got) == "".join(BIG_TOKENS)
            # The evicted subscriber no longer holds the publisher; it stays listed, with
            # the reason, until the server closes it.
            evicted = [sub for sub in session.statistics().subscribers if sub.evicted]
            assert [sub.evicted.startswith("stalled: no progress for 1s") for sub in evicted] == [
                True
            ]
            # The run went on without it: the rest of the log never reached its buffer.
            (stalled_sub,) = evicted
            assert stalled_sub.delivered + stalled_sub.buffered < len(session.log)
            # Now the stalled client reads: a gapless prefix, then why, then 1008.
            events, code, reason = await stalled.read_until_close()
            assert code == 1008 and reason.startswith("evicted: stalled: no progress for 1s")
            error = events[-1]
            assert error["type"] == "error" and error["code"] == "evicted" and error["seq"] == 0
            prefix = events[:-1]
            assert prefix[0]["type"] == "state"
            last = assert_gapless(prefix[1:], prefix[0]["seq"])
            assert f"reconnect with ?after={last} " in error["message"]
            await stalled.stream.aclose()
            # It comes back with ?after= and gets exactly the rest.
            async with open_websocket_url(
                s.url(query=f"after={last}"), max_message_size=2**23
            ) as back:
                rest = await until(back, of_type("done"))
            assert rest[0]["seq"] == last + 1 or rest[0]["type"] == "token_stream"
            assert_gapless(rest, last)
            assert text_of(prefix) + text_of(rest) == "".join(BIG_TOKENS)


# ---- token and origin -------------------------------------------------------------------------


async def test_token_is_required_by_query_or_bearer_header() -> None:
    with trio.fail_after(10):
        async with serving(token="s3cret") as s:
            for query in ("", "token=wrong", "token="):
                with pytest.raises(ConnectionRejected) as info:
                    async with open_websocket_url(s.url(query=query)):
                        pass
                assert info.value.status_code == 401
                assert info.value.body == (
                    b"unauthorized: a valid token is required (?token= or Authorization: Bearer)\n"
                )
            async with open_websocket_url(s.url(query="token=s3cret")) as ws:
                assert (await frame(ws))[0]["type"] == "state"
            headers = [(b"Authorization", b"Bearer s3cret")]
            async with open_websocket_url(s.url(), extra_headers=headers) as ws:
                assert (await frame(ws))[0]["type"] == "state"
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(
                    s.url(), extra_headers=[(b"Authorization", b"Bearer no")]
                ):
                    pass
            assert info.value.status_code == 401


async def _upgrade_status(
    port: int, *, host: str, origin: str | None, target: str = "/sessions/s1"
) -> int:
    headers = [("Origin", origin)] if origin is not None else []
    client, event = await RawClient.connect(port, target, host=host, headers=headers)
    await client.stream.aclose()
    if isinstance(event, wse.AcceptConnection):
        return 101
    assert isinstance(event, wse.RejectConnection)
    return event.status_code


async def test_origin_allow_list_and_dns_rebinding() -> None:
    with trio.fail_after(10):
        async with serving(allow_origins=["https://app.example"]) as s:
            here = f"127.0.0.1:{s.port}"
            check = partial(_upgrade_status, s.port)
            assert await check(host=here, origin=None) == 101  # not a browser
            assert await check(host=here, origin=f"http://{here}") == 101  # our own page
            assert (
                await check(host=f"localhost:{s.port}", origin=f"http://localhost:{s.port}") == 101
            )
            assert await check(host=here, origin="https://app.example") == 101  # listed
            assert await check(host=here, origin="https://evil.example") == 403
            assert await check(host=here, origin="null") == 403
            # A rebinding page: its Origin matches the Host it asked for, not ours.
            evil = f"evil.example:{s.port}"
            assert await check(host=evil, origin=f"http://{evil}") == 403
        async with serving(token="t") as s:
            # With a token the token is the proof; a page without it is still refused.
            evil = f"evil.example:{s.port}"
            assert await check_token(s.port, evil, "t") == 101
            assert await check_token(s.port, evil, "x") == 401


async def check_token(port: int, host: str, token: str) -> int:
    return await _upgrade_status(
        port, host=host, origin=f"http://{host}", target=f"/sessions/s1?token={token}"
    )


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/nope", 404),
        ("/sessions/", 400),
        ("/sessions/bad%20id", 400),
        ("/sessions/" + "a" * 65, 400),
        ("/sessions/s1?after=-1", 400),
        ("/sessions/s1?after=x", 400),
        ("/sessions/s1?after=1&after=2", 400),
        ("/sessions/s1?colour=red", 400),
        ("/sessions/s1?after=0", 101),
        ("/sessions/s.1_-x", 101),
    ],
)
async def test_paths_and_queries_are_validated(target: str, status: int) -> None:
    with trio.fail_after(10):
        async with serving() as s:
            if target.endswith("after=0"):
                await s.runtime.open_session("s1")
            got = await _upgrade_status(
                s.port, host=f"127.0.0.1:{s.port}", origin=None, target=target
            )
            assert got == status


# ---- shutdown and the command line ------------------------------------------------------


async def test_drain_ends_this_servers_clients_and_nothing_else() -> None:
    """``drain`` closes the server's clients, each after every event published for it,
    and touches nothing else: the embedding program's own session and its own
    subscriptions (even to a session the server opened) carry on."""
    with trio.fail_after(10):
        async with serving(NAPPING) as s:
            own = await s.runtime.open_session("own")  # the program's: never handed over
            async with open_websocket_url(s.url("s1")) as ws:
                await frame(ws)
                s1 = s.runtime.sessions["s1"]
                async with own.subscribe() as own_events, s1.subscribe() as s1_events:
                    # Published and not yet sent when drain begins: the client gets them.
                    for i in range(5):
                        s1.publish_nowait(ev.Error(code="note", message=f"n{i}", retryable=True))
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(s.server.drain, 5)
                        events, code, reason = await _closed(ws)
                    assert [(e["seq"], e["message"]) for e in events] == [
                        (i + 1, f"n{i}") for i in range(5)
                    ]
                    assert (code, reason) == (1001, "server shutting down")
                    assert s.server.statistics().clients == 0
                    # The program's subscriptions get what is published from now on.
                    await own.send("still here")
                    assert (await own_events.receive()).type == "user_input"
                    await s1.send("and here")
                    got = [await s1_events.receive() for _ in range(6)]
                    assert [e.type for e in got] == ["error"] * 5 + ["user_input"]
                    # A client arriving now is told at once.
                    async with open_websocket_url(s.url("s1")) as late:
                        assert await _closed(late) == ([], 1001, "server shutting down")
            assert s.runtime.get_session("own") is own and not own.closed
            assert s.runtime.get_session("s1") is s1 and not s1.closed


async def test_cancelling_the_server_closes_clients_with_1001_and_leaves_runs_alone() -> None:
    with trio.fail_after(10):
        model = ScriptedModel(NAPPING.build())
        async with trio_agent.open_runtime(model=model, tools=[nap]) as rt:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(partial(serve_websocket, rt, port=0))
                async with open_websocket_url(f"ws://127.0.0.1:{port}/sessions/s1") as ws:
                    await frame(ws)
                    await command(ws, op="user_input", text="start")
                    await until(ws, of_type("tool_call"))
                    nursery.cancel_scope.cancel()
                    _, code, reason = await _closed(ws)
                    assert (code, reason) == (1001, "server shutting down")
            assert rt.sessions["s1"].state.status == "acting"  # the run is the runtime's


@asynccontextmanager
async def serve_process(
    tmp_path: Path, script: dict[str, Any], *flags: str
) -> AsyncIterator[tuple[trio.Process, int]]:
    """``trio-agent serve --port 0 --model scripted:FILE FLAGS…`` in a subprocess, and
    the port it printed.  Ended with SIGTERM on the way out, if it is still running."""
    path = tmp_path / "script.json"
    path.write_bytes(orjson.dumps(script))
    command_line = [
        *(sys.executable, "-m", "trio_agent.cli", "serve", "--port", "0"),
        *("--model", f"scripted:{path}", *flags),
    ]
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            partial(
                trio.run_process,
                command_line,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            first = b""
            while b"\n" not in first:
                data = await proc.stdout.receive_some()
                if not data:
                    error = await proc.stderr.receive_some()
                    raise AssertionError(f"serve exited before it listened: {error!r}")
                first += data
            match = re.search(rb"http://127\.0\.0\.1:(\d+)/", first)
            assert match, first
            yield proc, int(match.group(1))
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)


async def test_serve_command_shuts_down_gracefully_on_sigterm(tmp_path: Path) -> None:
    """``trio-agent serve`` in a subprocess: on SIGTERM the run is cancelled (the client
    sees ``done`` ``cancelled``), the client is closed with 1001, the process exits 0.
    (Every step of the shutdown is bounded by a timeout of its own; the test's bound is
    for a hang, not a measure of speed.)"""
    script = {
        "turns": [{"tool_calls": [{"id": "z", "name": "sleep", "arguments": {"seconds": 60}}]}]
    }
    with trio.fail_after(20):
        async with serve_process(tmp_path, script) as (proc, port):
            async with open_websocket_url(f"ws://127.0.0.1:{port}/sessions/s1") as ws:
                await frame(ws)
                await command(ws, op="user_input", text="sleep")
                await until(ws, of_type("tool_call"))
                proc.send_signal(signal.SIGTERM)
                events, code, reason = await _closed(ws)
            assert [(e["type"], e.get("status")) for e in events][-2:] == [
                ("tool_result", "cancelled"),
                ("done", "cancelled"),
            ]
            assert (code, reason) == (1001, "server shutting down")
            assert await proc.wait() == 0


async def test_a_limit_flag_of_serve_takes_effect(tmp_path: Path) -> None:
    script = {"turns": [{"tokens": ["hello"]}]}
    with trio.fail_after(20):
        async with serve_process(tmp_path, script, "--max-connections", "1") as (_, port):
            url = f"ws://127.0.0.1:{port}/sessions/s1"
            async with open_websocket_url(url) as first:
                assert (await frame(first))[0]["type"] == "state"
                async with open_websocket_url(url) as second:
                    events, code, reason = await _closed(second)
            message = "the server already has 1 clients (max_connections)"
            assert [(e["type"], e["code"], e["message"]) for e in events] == [
                ("error", "max_connections", message)
            ]
            assert (code, reason) == (1013, f"max_connections: {message}")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="scripted")
    parser.add_argument("--base-url", default=None)
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_the_limit_flags_make_the_server_limits() -> None:
    assert limits_from_args(_args()) == ServerLimits()
    args = _args("--max-connections", "500", "--max-sessions", "5000", "--command-rate", "2.5")
    assert limits_from_args(args) == ServerLimits(
        max_connections=500, max_sessions=5000, command_rate=2.5
    )
    # Every field has its flag, named after it.
    flags = {f.name: f"--{f.name.replace('_', '-')}" for f in attrs.fields(ServerLimits)}
    doubled = {name: 2 * getattr(ServerLimits(), name) for name in flags}  # a valid value for each
    argv = [part for name, flag in flags.items() for part in (flag, str(doubled[name]))]
    assert limits_from_args(_args(*argv)) == ServerLimits(**doubled)


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIO_AGENT_TOKEN", raising=False)
    assert serve_command(_args("--host", "0.0.0.0")) == 2
    assert "refusing to listen on '0.0.0.0' without a token" in capsys.readouterr().err
    args = _args(
        "--host", "::1", "--port", "9", "--allow-origin", "https://a", "--allow-origin", "https://b"
    )
    assert (args.host, args.port, args.token, args.allow_origins) == (
        "::1",
        9,
        None,
        ["https://a", "https://b"],
    )


async def test_a_repeated_command_id_is_acked_to_its_sender_and_applied_once() -> None:
    with trio.fail_after(10):
        async with (
            serving(NAPPING, runtime_options={"approval": {"nap": True}}) as s,
            open_websocket_url(s.url()) as a,
            open_websocket_url(s.url()) as b,
        ):
            await frame(a)
            await frame(b)
            await command(a, op="user_input", text="go", id="m1")
            (user,) = [
                e for e in await until(a, of_type("user_input")) if e["type"] == "user_input"
            ]
            assert user["command_id"] == "m1"
            await command(a, op="user_input", text="go", id="m1")  # a retry
            assert (await until(a, of_type("ack")))[-1] == {
                "type": "ack",
                "command_id": "m1",
                "seq": user["seq"],
            }
            # The call waits for approval; b approves it over the wire, twice.
            got = await until(b, of_type("tool_approval_requested"))
            assert [e["type"] for e in got].count("user_input") == 1  # b: no ack, one input
            await command(b, op="approve", call_id="n1", approved=True, id="yes")
            await command(b, op="approve", call_id="n1", approved=True, id="yes")
            decision = (await until(b, of_type("tool_approval")))[-1]
            assert (decision["approved"], decision["command_id"]) == (True, "yes")
            assert (await until(b, of_type("ack")))[-1]["seq"] == decision["seq"]
            await command(b, op="approve", call_id="n1", approved=False)  # no id: judged
            error = await client_error(b)
            assert error["code"] == "bad_state"
            assert error["message"] == (
                "can't deny tool call 'n1' of session 's1': it is running, not awaiting approval"
            )
