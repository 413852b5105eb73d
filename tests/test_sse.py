"""Server-Sent Events and the HTTP command endpoint, against a real server on 127.0.0.1
(port 0), with real clients: httpx and httpx-sse.

As in ``test_server.py``: real sockets and real time, so nothing is ordered by sleeping
and nothing asserts how long something took; a run that must still be going is driven
by a :class:`GatedModel`, and every test is bounded.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
from httpx_sse import ServerSentEvent, aconnect_sse
from test_server import (
    BIG_TOKENS,
    TOKENS,
    Event,
    GatedModel,
    Served,
    assert_gapless,
    published,
    serving,
    text_of,
)

from trio_agent.testing import ScriptBuilder, check_invariants
from trio_agent.transports import ServerLimits

pytestmark = pytest.mark.timeout(30)


@asynccontextmanager
async def http_client(s: Served, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{s.port}", timeout=20, **options
    ) as client:
        yield client


class Stream:
    """One SSE response, read with httpx-sse: its messages, decoded."""

    def __init__(self, messages: AsyncIterator[ServerSentEvent]) -> None:
        self.messages = messages
        self.last_id = ""

    async def next(self) -> ServerSentEvent:
        message = await anext(self.messages)
        if message.id:
            self.last_id = message.id
        return message

    async def until(self, kind: str) -> list[Event]:
        """The events up to and including the first of type ``kind``; each message's
        ``id`` is its seq and its ``event`` its type."""
        out: list[Event] = []
        while True:
            message = await self.next()
            if not message.data:
                continue  # (a field-only message: retry)
            event = orjson.loads(message.data)
            assert message.event == event["type"]
            if event["session"]:
                assert message.id == str(event["seq"])
            else:
                assert not message.id, message  # no id: the last stands
            out.append(event)
            if event["type"] == kind:
                return out

    async def rest(self) -> list[Event]:
        """Every event until the server ends the response."""
        out = []
        async for message in self.messages:
            if message.id:
                self.last_id = message.id
            if message.data:
                out.append(orjson.loads(message.data))
        return out


@asynccontextmanager
async def events(
    client: httpx.AsyncClient, session: str = "s1", query: str = "", **options: Any
) -> AsyncIterator[Stream]:
    url = f"/sessions/{session}/events" + (f"?{query}" if query else "")
    async with aconnect_sse(client, "GET", url, **options) as source:
        assert source.response.status_code == 200
        yield Stream(source.aiter_sse())


async def post(client: httpx.AsyncClient, session: str = "s1", **op: Any) -> httpx.Response:
    return await client.post(f"/sessions/{session}/commands", json=op)


# ---- the stream -------------------------------------------------------------------------


async def test_a_state_message_comes_first_then_every_event_with_its_seq() -> None:
    with trio.fail_after(15):
        async with serving() as s, http_client(s) as client, events(client) as stream:
            first = await stream.next()
            assert first.retry == 1000  # retry: on connect, with the first message
            assert (first.event, first.id) == ("state", "0")
            assert orjson.loads(first.data)["state"]["status"] == "idle"
            reply = await post(client, op="user_input", text="go", id="c1")
            assert (reply.status_code, reply.json()) == (202, {"seq": 1, "duplicate": False})
            got = await stream.until("done")
            session = s.runtime.sessions["s1"]
            assert text_of(got) == "".join(TOKENS)
            assert assert_gapless(got, 0) == session.log.last_seq
            assert got[0]["command_id"] == "c1"
            # The same command again (its id as the Idempotency-Key): applied once.
            again = await client.post(
                "/sessions/s1/commands",
                json={"op": "user_input", "text": "go"},
                headers={"idempotency-key": "c1"},
            )
            assert (again.status_code, again.json()) == (202, {"seq": 1, "duplicate": True})
            # GET /sessions/{id}: the state snapshot.
            state = (await client.get("/sessions/s1")).json()
            assert state["type"] == "state" and state["seq"] == session.log.last_seq
            assert state["state"]["status"] == "done"
            check_invariants(list(session.log), session.state)
            assert s.server.statistics().clients_by_session == {"s1": 1}


async def test_reconnect_with_last_event_id_misses_nothing() -> None:
    model = GatedModel()
    with trio.fail_after(15):
        async with serving(model=model) as s, http_client(s) as client:
            seen: list[Event] = []
            async with events(client) as stream:
                await stream.until("state")
                await post(client, op="user_input", text="go")
                model.feed(TOKENS[0])
                seen += await stream.until("token_stream")
                last = stream.last_id
            session = s.runtime.sessions["s1"]
            # Reconnect as an EventSource does, with a stale ?after= in its URL: the
            # Last-Event-ID header wins.  Two tokens were published meanwhile.
            for i in range(3):
                model.feed(*TOKENS[1 + 2 * i : 3 + 2 * i])
                await published(session, int(last) + 2)
                async with events(
                    client, query="after=0", headers={"last-event-id": last}
                ) as stream:
                    got = await stream.until("token_stream")
                    while got[-1]["seq"] < int(last) + 2:
                        got += await stream.until("token_stream")
                    seen += got
                    last = stream.last_id
            model.feed(*TOKENS[7:])
            model.finish()
            async with events(client, headers={"last-event-id": last}) as stream:
                seen += await stream.until("done")
            assert_gapless(seen, 0)
            assert text_of(seen) == "".join(TOKENS)
            assert seen[-1]["seq"] == session.log.last_seq


async def test_a_stalled_stream_is_evicted_and_resumes_with_last_event_id() -> None:
    script = ScriptBuilder().turn(tokens=BIG_TOKENS)
    limits = ServerLimits(subscriber_capacity=4, stall_timeout=1.0)
    small = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    with trio.fail_after(25):
        async with (
            serving(script, limits=limits) as s,
            http_client(s) as client,
            http_client(s, transport=small) as slow,
            events(slow) as stalled,
        ):
            prefix = await stalled.until("state")  # then it stops reading
            async with events(client) as good:
                await good.until("state")
                await post(client, op="user_input", text="go")
                got = await good.until("done")
            assert text_of(got) == "".join(BIG_TOKENS)
            session = s.runtime.sessions["s1"]
            (evicted,) = [sub for sub in session.statistics().subscribers if sub.evicted]
            assert evicted.evicted is not None and evicted.evicted.startswith("stalled")
            assert evicted.delivered + evicted.buffered < len(session.log)
            # Now it reads: a gapless prefix, then why, then the end of the response.
            prefix += await stalled.rest()
            error = prefix[-1]
            assert error["type"] == "error" and error["code"] == "evicted"
            last = assert_gapless(prefix[1:-1], prefix[0]["seq"])
            assert stalled.last_id == str(last)  # (the error carries no id)
            assert f"reconnect with Last-Event-ID: {last} " in error["message"]
            async with events(client, headers={"last-event-id": stalled.last_id}) as back:
                rest = await back.until("done")
            assert_gapless(rest, last)
            assert text_of(prefix) + text_of(rest) == "".join(BIG_TOKENS)


async def test_an_id_the_log_no_longer_holds_gets_an_error_then_a_snapshot() -> None:
    with trio.fail_after(15):
        async with serving(runtime_options={"log_max_events": 10}) as s, http_client(s) as client:
            async with events(client) as stream:
                await stream.until("state")
                await post(client, op="user_input", text="go")
                await stream.until("done")
            session = s.runtime.sessions["s1"]
            for last_id, code, named in (
                ("1", "log_trimmed", "events after seq 1 were trimmed"),
                ("999", "bad_after", "after=999 is beyond the newest seq"),
            ):
                async with events(client, headers={"last-event-id": last_id}) as stream:
                    error, snapshot = await stream.until("state")
                assert error["code"] == code and error["message"].startswith(named)
                assert error["message"].endswith(
                    "a state snapshot follows: render it in place of what you had"
                )
                assert snapshot["seq"] == session.log.last_seq
                assert snapshot["state"]["status"] == "done"


async def test_a_silent_stream_gets_heartbeats() -> None:
    limits = ServerLimits(heartbeat_interval=0.05)
    with trio.fail_after(10):
        async with (
            serving(limits=limits) as s,
            http_client(s) as client,
            client.stream("GET", "/sessions/s1/events") as response,
        ):
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("retry: ")
            while (await anext(lines)) != "":
                pass  # the state message
            assert await anext(lines) == ":"  # a comment: nothing happened


async def test_sse_clients_count_toward_max_connections_and_are_drained() -> None:
    model = GatedModel()
    with trio.fail_after(15):
        async with (
            serving(model=model, limits=ServerLimits(max_connections=1)) as s,
            http_client(s) as client,
            events(client) as first,
        ):
            await first.until("state")
            async with events(client) as second:
                (refused,) = await second.rest()
            assert refused["code"] == "max_connections"
            await post(client, op="user_input", text="go")
            model.feed(*TOKENS[:3])
            await first.until("token_stream")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(s.server.drain, 5)
                rest = await first.rest()  # what was published, then the end
            assert rest == [] or all(e["type"] == "token_stream" for e in rest)
            assert s.server.statistics().clients == 0
            # Draining ended the stream, not the run: it goes on for its other clients.
            assert s.runtime.sessions["s1"].state.running


# ---- commands over HTTP ------------------------------------------------------------------


async def test_http_commands_answer_with_a_status_and_an_error_object() -> None:
    limits = ServerLimits(command_rate=1.0, command_burst=20, max_frame_size=200)
    with trio.fail_after(15):
        async with serving(limits=limits) as s, http_client(s) as client:

            async def answer(**kwargs: Any) -> tuple[int, Any]:
                reply = await client.post("/sessions/s1/commands", **kwargs)
                return reply.status_code, reply.json()

            def error(code: str, message: str) -> dict[str, Any]:
                return {"error": {"code": code, "message": message}}

            assert await answer(json={"op": "resume"}) == (
                409,
                error("bad_state", "can't resume session 's1': it is idle, not interrupted"),
            )
            assert await answer(json={"op": "fly"}) == (
                400,
                error(
                    "unknown_op",
                    "unknown op 'fly'; expected one of user_input, interrupt, resume, "
                    "cancel, approve",
                ),
            )
            status, body = await answer(
                content=b"{nope", headers={"content-type": "application/json"}
            )
            assert status == 400 and body["error"]["code"] == "bad_json"
            assert await answer(content=b"{}", headers={"content-type": "text/plain"}) == (
                415,
                error(
                    "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json), got 'text/plain'",
                ),
            )
            assert await answer(json={"op": "user_input", "text": "x" * 300}) == (
                413,
                error("too_large", "request body over the limit of 200 bytes"),
            )
            assert await answer(
                json={"op": "cancel", "id": "a"}, headers={"idempotency-key": "b"}
            ) == (
                400,
                error("bad_command", "the Idempotency-Key 'b' and the command's id 'a' differ"),
            )
            # Over the rate (per remote address and session): 429 with Retry-After.
            statuses = []
            for _ in range(25):
                reply = await client.post("/sessions/s1/commands", json={"op": "cancel"})
                statuses.append(reply.status_code)
            assert 429 in statuses and reply.status_code == 429
            assert reply.headers["retry-after"] == "1"
            assert reply.json()["error"]["code"] == "rate_limited"
            # Another session has a bucket of its own.
            assert (await post(client, session="s2", op="cancel")).status_code == 409


async def test_token_origin_and_cors() -> None:
    page = "http://app.example"
    with trio.fail_after(15):
        async with (
            serving(token="s3cret", allow_origins=[page]) as s,
            http_client(s) as client,
        ):
            for path in ("/sessions/s1", "/sessions/s1/events"):
                reply = await client.get(path)
                assert reply.status_code == 401 and reply.headers["www-authenticate"]
            reply = await post(client, op="cancel")
            assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthorized"
            bearer = {"authorization": "Bearer s3cret"}
            assert (await client.get("/sessions/s1", headers=bearer)).status_code == 200
            async with events(client, query="token=s3cret") as stream:
                assert (await stream.until("state"))[0]["seq"] == 0
            # A page of an allowed origin: its preflight is answered, its answers carry CORS.
            preflight = await client.options(
                "/sessions/s1/commands",
                headers={"origin": page, "access-control-request-method": "POST"},
            )
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == page
            assert "idempotency-key" in preflight.headers["access-control-allow-headers"]
            assert preflight.headers["access-control-allow-methods"] == "POST, OPTIONS"
            reply = await client.post(
                "/sessions/s1/commands", json={"op": "cancel"}, headers={**bearer, "origin": page}
            )
            assert reply.status_code == 409
            assert reply.headers["access-control-allow-origin"] == page
            # Any other origin: 403, the preflight too.
            evil = {"origin": "http://evil.example"}
            reply = await client.options(
                "/sessions/s1/events", headers={**evil, "access-control-request-method": "GET"}
            )
            assert reply.status_code == 403 and "access-control-allow-origin" not in reply.headers
            reply = await client.get("/sessions/s1/events?token=s3cret", headers=evil)
            assert reply.status_code == 403
            # Bad queries and ids are refused before any stream.
            for target, status in (
                ("/sessions/s1/events?token=s3cret&x=1", 400),
                ("/sessions/bad%20id/events?token=s3cret", 400),
                ("/sessions/s1/events?token=s3cret&after=-1", 400),
            ):
                assert (await client.get(target)).status_code == status
            reply = await client.get(
                "/sessions/s1/events?token=s3cret", headers={"last-event-id": "x"}
            )
            assert reply.status_code == 400
