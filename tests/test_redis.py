"""Sessions on Redis Streams (``trio_agent.redis``), against a real ``redis-server``.

The server is started by :mod:`trio_agent.bench._redis_server` on a free loopback port
with a temporary directory and AOF on; with ``CI=true`` a missing ``redis-server`` fails
the module instead of skipping it.  Time is real here (Redis is a real process), so every
wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from conftest import IN_CI

import trio_agent
import trio_agent.redis
from trio_agent import Runtime, Session
from trio_agent import events as ev
from trio_agent.bench._redis_server import RedisServer, RedisServerMissing
from trio_agent.redis import RedisLogError
from trio_agent.redis.log import RedisLog, decode_entry, open_redis_log, seq_of
from trio_agent.testing import ScriptBuilder, check_invariants

pytestmark = pytest.mark.timeout(60)

LEASE_TTL = 1.2
"""A short lease, so that a dead owner is recovered within about a second; not shorter:
renewed every TTL/3 by a process sharing two cores with the whole suite, a 0.6 s lease
was once missed under load (the owner lost it and closed the session mid-test)."""

BLOCK = 0.2


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except RedisServerMissing as exc:
        if IN_CI:
            pytest.fail(f"CI=true and {exc}")
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def redis_runtime(
    server: RedisServer,
    prefix: str,
    node: str,
    model: Any,
    *,
    reply_timeout: float | None = None,
    **options: Any,
) -> AsyncIterator[tuple[Runtime, RedisLog]]:
    async with (
        open_redis_log(
            server.url,
            prefix=prefix,
            lease_ttl=LEASE_TTL,
            block=BLOCK,
            node=node,
            reply_timeout=reply_timeout,
        ) as log,
        trio_agent.open_runtime(model=model, tools=[trio_agent.sleep], log=log, **options) as rt,
    ):
        yield rt, log


def slow_script(tokens: int = 40, delay: float = 0.02, nap: float = 0.5) -> ScriptBuilder:
    return (
        ScriptBuilder()
        .turn(
            [f"t{i} " for i in range(tokens)],
            delay=delay,
            tool_calls=[{"id": "c1", "name": "sleep", "arguments": {"seconds": nap}}],
        )
        .turn(["done", "."], delay=delay)
    )


async def wait_for(
    session: Session | trio_agent.EventBus, predicate: Any, timeout: float = 10.0
) -> None:
    """Until ``predicate(state)`` holds for the session (what clients see), or for a
    bus (a replica's working bus: what the agent loop published)."""
    with trio.fail_after(timeout):
        async with session.subscribe(policy="drop_oldest") as events:
            while not predicate(session.state):
                await events.receive()


def working_bus(log: RedisLog, session: Session) -> trio_agent.EventBus:
    """The working bus of ``session`` in the process of ``log`` (RedisLog.replica)."""
    replica = log.replica(session.id)
    assert replica is not None
    return replica.bus


def wires(events: Sequence[ev.Event]) -> list[bytes]:
    return [e.to_wire() for e in events]


# ---- the log on a stream ------------------------------------------------------------


async def test_log_on_a_stream_ids_are_seqs_and_replay_rebuilds(
    redis_server: RedisServer, prefix: str
) -> None:
    model = ScriptBuilder().turn(["Hello", ",", " world"]).model()
    with trio.fail_after(20):
        async with redis_runtime(redis_server, prefix, "a", model) as (rt, log):
            session = await rt.open_session("s1")
            async with session.subscribe(after=0) as events:
                await session.send("hi")
                seen = []
                async for e in events:
                    seen.append(e)
                    if isinstance(e, ev.Done):
                        break
            entries = await log.client.xrange(log.key("s1", "log"))
            assert [x.identifier for x in entries] == [f"{e.seq}-0".encode() for e in seen]
            stored = await log.read("s1", 0)
            assert wires(stored) == wires(seen) == wires(list(session.log))
            check_invariants(stored, session.state)
            assert await log.read("s1", 3) == stored[3:]
        # A new process (here: runtime) rebuilds the session from the stream alone.
        async with redis_runtime(redis_server, prefix, "b", model) as (rt, _):
            again = await rt.open_session("s1")
            assert wires(list(again.log)) == wires(stored)
            assert again.state == session.state
            await again.send("more")  # it owns the session now: runs go on from seq n+1
            await wait_for(again, lambda s: s.status == "done" and s.run == 2)
            check_invariants(list(again.log), again.state)


async def test_replica_sees_the_owners_run_and_its_interrupt_takes_effect(
    redis_server: RedisServer, prefix: str
) -> None:
    model = slow_script().model()
    with trio.fail_after(30):
        async with (
            redis_runtime(redis_server, prefix, "a", model) as (rt_a, _),
            redis_runtime(redis_server, prefix, "b", slow_script().model()) as (rt_b, log_b),
        ):
            owner = await rt_a.open_session("s")
            replica = await rt_b.open_session("s")
            assert not owner.is_replica and replica.is_replica
            async with replica.subscribe(after=0) as events:
                await replica.send("go")  # forwarded through the command stream
                got: list[ev.Event] = []
                async for e in events:
                    got.append(e)
                    if isinstance(e, ev.TokenStream) and e.text == "t5 ":
                        await replica.interrupt("hard", reason="from b")
                    if isinstance(e, ev.Interrupted):
                        break
                await wait_for(owner, lambda s: s.status == "interrupted")
                await replica.resume("carry on")
                async for e in events:
                    got.append(e)
                    if isinstance(e, ev.Done):
                        break
            assert [e.seq for e in got] == list(range(1, len(got) + 1))
            await wait_for(owner, lambda s: s.seq == got[-1].seq)  # (its view, a hop behind)
            assert wires(got) == wires(list(owner.log))
            interrupts = [e for e in got if isinstance(e, ev.Interrupt)]
            assert [(i.mode, i.reason) for i in interrupts] == [("hard", "from b")]
            check_invariants(got, owner.state)
            assert replica.state == owner.state
            assert log_b.statistics().commands_waiting == 0  # every verdict came


async def test_cancelling_a_tail_500_times_leaves_the_pool_healthy(
    redis_server: RedisServer, prefix: str
) -> None:
    """The coredis pitfall: a cancelled XREAD BLOCK kills its connection and the pool
    never gets the slot back.  First shown on a raw pool (it raises, thanks to the
    pool timeout, instead of hanging), then the tails are shown immune."""
    with trio.fail_after(50):
        async with open_redis_log(
            redis_server.url, prefix=prefix, max_connections=4, pool_timeout=0.3, block=BLOCK
        ) as log:
            key = log.key("s", "log")
            await log.client.xadd(key, {"e": b"x"}, identifier="1-0")
            for _ in range(4):  # the pitfall, on the shared pool
                with trio.move_on_after(0.01):
                    await log.client.xread({key: "1-0"}, block=1000)
            with pytest.raises(TimeoutError):  # every slot of the pool leaked
                await log.client.get("k")

        async with open_redis_log(
            redis_server.url, prefix=prefix, max_connections=4, pool_timeout=1.0, block=BLOCK
        ) as log:
            baseline = len(await log.client.client_list())
            rng = random.Random(7)
            received = 0

            async def count_batch(entries: list[Any]) -> None:
                nonlocal received
                received += len(entries)
                await trio.lowlevel.checkpoint()

            for i in range(500):
                with trio.move_on_after(rng.choice([0, 0.0005, 0.002, 0.005])):
                    await log.tail(key, "0-0", count_batch)
                if i % 50 == 0:  # the shared pool answers between cancellations
                    assert await log.client.xlen(key) == 1
            assert received > 0  # some tails got as far as reading
            assert log.statistics().tails_open == 0
            stats = log.statistics()
            assert stats.dedicated_connections == 0  # each tail's died with it

            async def xlen() -> None:
                assert await log.client.xlen(key) == 1

            for _ in range(20):  # more commands at once than the pool has connections
                async with trio.open_nursery() as nursery:
                    for _ in range(10):
                        nursery.start_soon(xlen)
            with trio.fail_after(5):
                # (polling another process: there is no event to wait on)
                while len(await log.client.client_list()) > baseline:  # noqa: ASYNC110
                    await trio.sleep(0.05)  # the server saw every dedicated connection go


async def test_dead_owner_is_recovered_by_replay(redis_server: RedisServer, prefix: str) -> None:
    """An owner that died mid-tool-call (its events are on the stream, its lease is
    left to expire): the replica takes over, closes the call ``cancelled``, publishes
    ``interrupted`` with the reason, and the run resumes from there."""
    with trio.fail_after(30):
        async with open_redis_log(redis_server.url, prefix=prefix, node="dead") as dead:
            stamped: list[ev.Event] = []
            for event in [
                ev.UserInput(run=1, text="go"),
                ev.RunStarted(run=1),
                ev.Thinking(run=1, step=1),
                ev.TokenStream(run=1, step=1, text="Let me"),
                ev.ToolCallStart(run=1, step=1, call_id="c1", name="sleep"),
                ev.ToolCall(run=1, step=1, call_id="c1", name="sleep", arguments={"seconds": 30}),
            ]:
                stamped.append(attrs_evolve(event, session="s", seq=len(stamped) + 1, ts=1.0))
            # (The lease expires once the events are in, not before: on a loaded
            # machine the append may come later than one TTL after the claim.)
            await dead.client.set(dead.key("s", "owner"), dead.token("s"))
            await dead.append("s", stamped)
            await dead.client.pexpire(dead.key("s", "owner"), int(LEASE_TTL * 1000))
        model = ScriptBuilder().turn(["resumed"]).model()
        async with redis_runtime(redis_server, prefix, "b", model) as (rt, log):
            session = await rt.open_session("s")
            assert session.is_replica  # a replica while the lease lives
            await wait_for(session, lambda s: s.status == "interrupted")
            tail = list(session.log)[len(stamped) :]
            assert [e.type for e in tail] == ["interrupt", "tool_result", "interrupted"]
            assert tail[1].status == "cancelled"  # type: ignore[attr-defined]
            assert "recovered by b" in tail[2].reason  # type: ignore[attr-defined]
            assert wires(list(session.log)[: len(stamped)]) == wires(stamped)
            await session.resume("go on")
            await wait_for(session, lambda s: s.status == "done")
            stored = await log.read("s")
            check_invariants(stored, session.state)
            assert wires(stored) == wires(list(session.log))


async def test_closing_the_owner_ends_its_run_and_hands_the_session_over(
    redis_server: RedisServer, prefix: str
) -> None:
    with trio.fail_after(30):
        async with (
            redis_runtime(redis_server, prefix, "a", slow_script().model()) as (rt_a, _),
            redis_runtime(redis_server, prefix, "b", ScriptBuilder().turn(["hi"]).model()) as (
                rt_b,
                log_b,
            ),
        ):
            owner = await rt_a.open_session("s")
            replica = await rt_b.open_session("s")
            await owner.send("go")
            await wait_for(replica, lambda s: s.status == "thinking" and len(s.text) > 0)
            await owner.aclose()
            assert rt_a.get_session("s") is None
            # The run ended through its cleanup path, durably; the lease was released,
            # so b owns the session at once (not after the lease would have expired).
            with trio.fail_after(LEASE_TTL / 2):
                await wait_for(replica, lambda s: s.status == "done")
                await replica.wait_owned()
            stored = await log_b.read("s")
            assert stored[-1].type == "done" and stored[-1].status == "cancelled"  # type: ignore[attr-defined]
            await replica.send("again")
            await wait_for(replica, lambda s: s.status == "done" and s.run == 2)
            check_invariants(await log_b.read("s"), replica.state)


async def test_closing_an_owner_whose_client_is_behind_harms_no_other_session(
    redis_server: RedisServer, prefix: str
) -> None:
    # No delay: the loop publishes YIELD_EVERY tokens at a time, so the relay takes
    # them as one batch, and the client that is behind stops it partway through.
    model = slow_script(tokens=200, delay=0).model()
    with trio.fail_after(30):
        async with redis_runtime(redis_server, prefix, "a", model) as (rt, log):
            session = await rt.open_session("s")
            other = await rt.open_session("other")
            behind = session.open_subscription(capacity=4, stall_timeout=1000)
            await session.send("go")
            # The relay made a batch durable and is handing it to the view, where the
            # client that is behind holds it up halfway.
            while await log.client.xlen(log.key("s", "log")) <= session.log.last_seq + 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            behind.close()
            await session.aclose()
            assert rt.get_session("other") is other and not other.closed
            shown = list(session.log)
            assert [e.seq for e in shown] == list(range(1, len(shown) + 1))  # no repeat
            stored = await log.read("s")
            assert wires(shown) == wires(stored[: len(shown)])
            assert stored[-1].type == "done" and stored[-1].status == "cancelled"  # type: ignore[attr-defined]
            await other.send("still here")
            await wait_for(other, lambda s: s.status == "done")


async def test_a_command_forwarded_to_an_owner_that_is_closing_harms_no_other_session(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(30):
        async with (
            redis_runtime(redis_server, prefix, "a", ScriptBuilder().turn(["x"]).model()) as (
                rt_a,
                log_a,
            ),
            redis_runtime(redis_server, prefix, "b", ScriptBuilder().turn(["y"]).model()) as (
                rt_b,
                _,
            ),
        ):
            owner = await rt_a.open_session("s")
            other = await rt_a.open_session("other")
            replica = await rt_b.open_session("s")
            record = log_a.client.set

            async def record_then_close(*args: Any, **kwargs: Any) -> Any:
                result = await record(*args, **kwargs)  # the command is recorded…
                owner.close_nowait()  # …and the owner begins closing before applying it
                return result

            monkeypatch.setattr(log_a.client, "set", record_then_close)
            # The owner refuses it (it was taken, so no other process applies it) and
            # says why, to the caller only.
            with pytest.raises(
                trio.ClosedResourceError,
                match=r"^session 's' is closing on its owner \(a\): the command was not applied$",
            ):
                await replica.send("hello")  # forwarded to a
            await owner.aclose()  # (closing already: returns once it is gone)
            monkeypatch.undo()
            assert rt_a.get_session("other") is other and not other.closed
            await other.send("still here")
            await wait_for(other, lambda s: s.status == "done")
            # b took the session over (a released the lease) and never applied it.
            await replica.wait_owned()
            await replica.send("second")
            await wait_for(replica, lambda s: s.status == "done")
            assert [e.text for e in replica.log if isinstance(e, ev.UserInput)] == ["second"]


_TAKE_LEASE = """
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('XRANGE', KEYS[2], '-', '+')
"""
"""What a partition looks like from Redis: the owner's lease lapsed while it could not
renew it and another process took it.  The lease is given to that process (no expiry:
its own claim sets one), and the log as it stood at that instant is returned (atomic:
nothing can slip in between)."""


@pytest.mark.parametrize("when", ["streaming", "in_tool_call"])
async def test_an_owner_that_lost_its_lease_stops_and_appends_nothing(
    redis_server: RedisServer, prefix: str, when: str, caplog: pytest.LogCaptureFixture
) -> None:
    """While the owner streams tokens, its next fenced append is refused; while it
    waits on a tool call (it publishes nothing), its lease renewal finds the lease
    gone.  Either way it stops serving the session, and nothing it published after
    losing the lease reaches the stream: the replica that holds the lease recovers the
    session from the log as it stood."""
    b_model = ScriptBuilder().turn(["resumed"]).turn(["resumed"]).model()  # (any turn)
    with trio.fail_after(30):
        async with (
            redis_runtime(redis_server, prefix, "a", slow_script(nap=30).model()) as (rt_a, log_a),
            redis_runtime(redis_server, prefix, "b", b_model) as (rt_b, log_b),
        ):
            owner = await rt_a.open_session("s")
            replica = await rt_b.open_session("s")
            assert not owner.is_replica and replica.is_replica
            a_working = working_bus(log_a, owner)
            seen_on_a = owner.open_subscription(after=0, capacity=1000)
            await owner.send("go")
            if when == "streaming":
                await wait_for(replica, lambda s: s.status == "thinking" and len(s.text) >= 6)
            else:
                await wait_for(replica, lambda s: [c.status for c in s.tool_calls] == ["running"])
            raw = await log_b.client.eval(
                _TAKE_LEASE, [log_b.key("s", "owner"), log_b.key("s", "log")], [log_b.token("s")]
            )
            snapshot = [(bytes(i), bytes(fields[1])) for i, fields in raw]
            n = len(snapshot)
            assert [seq_of(i) for i, _ in snapshot] == list(range(1, n + 1))

            # a stops serving the session: its task ends, the runtime forgets it.
            with trio.fail_after(LEASE_TTL * 5):
                await owner.wait_closed()
            assert owner.closed and rt_a.get_session("s") is None
            assert dict(rt_a.sessions) == {}  # (and runtime a itself carries on)
            assert log_a.statistics().tails_open == 0  # its command reader is gone
            # Why: the relay's fenced append was refused, or (in a tool call, when it
            # publishes nothing) the renewal found the lease gone.
            why = [r.getMessage() for r in caplog.records if r.name == "trio_agent.redis"]
            if when == "in_tool_call":
                took = "another process took the lease of session 's' (now held by 'b:s')"
                assert any(took in m for m in why)
            assert any("lease" in m and m.endswith("closing it here") for m in why)
            # It went on publishing on its working bus (tokens, or the cleanup of the
            # cancelled run)…
            lost = [e for e in a_working.log if e.seq > n]
            assert lost, "the owner published nothing after it lost the lease"
            assert lost[-1].type == "done" and lost[-1].status == "cancelled"  # type: ignore[attr-defined]
            # …but its clients only ever saw what was durable when it lost the lease.
            seen = [e async for e in seen_on_a]  # (then EndOfChannel: a's view closed)
            assert seen and seen[-1].seq <= n
            assert [e.to_wire() for e in seen] == [e for _, e in snapshot[: len(seen)]]

            # b owns the session and recovered it from the log as it stood.
            await wait_for(replica, lambda s: s.status == "interrupted")
            assert not replica.is_replica
            assert await log_b.owner("s") == log_b.token("s")
            entries = await log_b.client.xrange(log_b.key("s", "log"))
            assert [(e.identifier, e.field_values[b"e"]) for e in entries[:n]] == snapshot
            tail = [decode_entry(e) for e in entries[n:]]
            expected = ["interrupt", "interrupted"]
            if when == "in_tool_call":
                expected.insert(1, "tool_result")
                assert tail[1].status == "cancelled"  # type: ignore[attr-defined]
            assert [e.type for e in tail] == expected
            assert "recovered by b" in tail[0].reason  # type: ignore[attr-defined]
            assert "recovered by b" in tail[-1].reason  # type: ignore[attr-defined]

            await replica.resume("go on")
            await wait_for(replica, lambda s: s.status == "done")
            stored = await log_b.read("s")
            assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
            assert stored[-1].status == "completed" and stored[-1].run == 1  # type: ignore[attr-defined]
            assert wires(stored) == wires(list(replica.log))
            check_invariants(stored, replica.state)


def attrs_evolve(event: ev.Event, **changes: Any) -> ev.Event:
    import attrs

    return attrs.evolve(event, **changes)


# ---- Redis restarted mid-stream -----------------------------------------------------


async def test_redis_restart_mid_stream_pauses_the_run_and_loses_nothing(
    redis_server: RedisServer, prefix: str
) -> None:
    model = ScriptBuilder().turn([f"t{i} " for i in range(200)], delay=0.01).model()
    with trio.fail_after(40):
        async with (
            redis_runtime(redis_server, prefix, "a", model) as (rt_a, log_a),
            redis_runtime(redis_server, prefix, "b", ScriptBuilder().model()) as (rt_b, _),
        ):
            owner = await rt_a.open_session("s")
            replica = await rt_b.open_session("s")
            await owner.send("go")
            await wait_for(replica, lambda s: s.seq >= 20)
            await trio.to_thread.run_sync(redis_server.stop)
            # The run paused (the working bus: nothing is durable while Redis is down).
            await wait_for(working_bus(log_a, owner), lambda s: s.status == "interrupted")
            await trio.to_thread.run_sync(redis_server.start)
            # Durable again: the owner's clients see the pause and why.
            await wait_for(owner, lambda s: s.status == "interrupted" and s.error is not None)
            errors = [e for e in owner.log if isinstance(e, ev.Error)]
            assert errors and errors[0].code == "redis_unavailable" and errors[0].retryable
            (paused,) = [e for e in owner.log if isinstance(e, ev.Interrupted)]
            assert paused.reason.startswith("redis unavailable")
            await wait_for(replica, lambda s: s.status == "interrupted" and s.error is not None)
            await replica.resume()  # through the command stream: its reader reconnected
            await wait_for(replica, lambda s: s.status == "done", timeout=20)
            stored = await log_a.read("s")
            assert wires(stored) == wires(list(owner.log)) == wires(list(replica.log))
            check_invariants(stored, owner.state)
            assert str(replica.state.messages[-1].content).startswith("t0 t1 ")


# ---- two processes ------------------------------------------------------------------


@asynccontextmanager
async def serve_process(
    server: RedisServer,
    prefix: str,
    script: dict[str, Any],
    tmp: Path,
    name: str,
    *extra: str,
) -> AsyncIterator[tuple[trio.Process, int]]:
    path = tmp / f"{name}.json"
    path.write_text(orjson.dumps(script).decode())
    command = [
        sys.executable,
        "-m",
        "trio_agent.cli",
        "serve",
        "--port",
        "0",
        "--model",
        f"scripted:{path}",
        "--redis",
        server.url,
        "--redis-prefix",
        prefix,
        "--lease-ttl",
        str(LEASE_TTL),
        *extra,
    ]
    async with trio.open_nursery() as nursery:
        proc: trio.Process = await nursery.start(
            partial_run_process(command, stdout=subprocess.PIPE)
        )
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(15):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1)
                assert chunk, "the serve process exited before listening"
                line += chunk
        port = int(line.decode().rsplit(":", 1)[1].strip().strip("/"))
        try:
            yield proc, port
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
            nursery.cancel_scope.cancel()


def partial_run_process(command: list[str], **kwargs: Any) -> Any:
    async def run(*, task_status: trio.TaskStatus[trio.Process]) -> None:
        await trio.run_process(command, check=False, task_status=task_status, **kwargs)

    return run


class Client:
    """A WebSocket client of one session: every event dict it received, in order (the
    ``state`` snapshot apart, in ``snapshots``)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []

    async def until(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                frame = orjson.loads(await self.ws.get_message())
                for e in frame:
                    if e["type"] == "state":
                        self.snapshots.append(e)
                        continue
                    self.events.append(e)
                    if predicate(e):
                        return dict(e)

    async def send(self, **command: Any) -> None:
        await self.ws.send_message(orjson.dumps(command).decode())


@asynccontextmanager
async def connect(port: int, after: int | None = None) -> AsyncIterator[Client]:
    query = "" if after is None else f"?after={after}"
    async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/sessions/s{query}") as ws:
        yield Client(ws)


def _merge_key(e: dict[str, Any]) -> tuple[Any, ...] | None:
    """What the server merges consecutive events by (``wire.merge_events``), or None."""
    if e["type"] == "token_stream":
        return ("token_stream", e["run"], e["step"])
    if e["type"] == "tool_call_delta":
        return ("tool_call_delta", e["run"], e["step"], e["call_id"])
    return None


def assert_covers(received: list[dict[str, Any]], log: Sequence[ev.Event]) -> None:
    """What clients received (frames merge tokens and argument fragments) is exactly
    the log: every other event once, seqs increasing, merged text concatenating to the
    log's."""
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(set(seqs)), f"not strictly increasing: {seqs}"
    by_seq = {e.seq: e for e in log}
    texts: dict[tuple[Any, ...], str] = {}
    for e in received:
        key = _merge_key(e)
        if key is not None:
            texts[key] = texts.get(key, "") + e["text" if key[0] == "token_stream" else "delta"]
        else:
            assert by_seq[e["seq"]].to_dict() == e
    expected: dict[tuple[Any, ...], str] = {}
    for event in log:
        d = event.to_dict()
        key = _merge_key(d)
        if key is not None:
            expected[key] = (
                expected.get(key, "") + d["text" if key[0] == "token_stream" else "delta"]
            )
    assert texts == expected
    others = [e.seq for e in log if _merge_key(e.to_dict()) is None]
    assert [e["seq"] for e in received if _merge_key(e) is None] == others


async def test_two_processes_replica_interrupt_reconnect_and_kill_9_recovery(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    tokens = [f"w{i} " for i in range(30)]
    # The scripted model plays turn n when the conversation holds n assistant
    # messages: both processes play the same script, wherever the run is.
    script = (
        ScriptBuilder()
        .turn(tokens, delay=0.03)  # interrupted (hard) from the replica
        .turn(
            tokens,
            delay=0.01,
            tool_calls=[{"id": "n", "name": "sleep", "arguments": {"seconds": 20}}],
        )  # the owner is killed during the tool call
        .turn(["recovered", " and", " done."])  # played by the process that recovered
        .build()
    )
    with trio.fail_after(55):
        async with (
            serve_process(redis_server, prefix, script, tmp_path, "a") as (proc_a, port_a),
            serve_process(redis_server, prefix, script, tmp_path, "b") as (_, port_b),
        ):
            async with connect(port_a) as on_a:  # A opens the session first: A owns it
                await on_a.send(op="user_input", text="hello")  # nothing happens on A yet…
                await on_a.until(lambda e: e["type"] == "run_started")
                # …but a client of B sees the run that A drives, and steers it.
                async with connect(port_b, after=0) as on_b:
                    await on_b.until(lambda e: e["type"] == "token_stream" and e["seq"] > 6)
                    await on_b.send(op="interrupt", mode="hard", reason="from b")
                    await on_b.until(lambda e: e["type"] == "interrupted")
                    seen_b = list(on_b.events)
                # Reconnect to the other process with after=: nothing lost, nothing twice.
                async with connect(port_a, after=seen_b[-1]["seq"]) as again:
                    await again.send(op="resume", instruction="go on")
                    # (the step's model call ends after its tool call: then only the
                    # call is in flight)
                    await again.until(lambda e: e["type"] == "model_finished")
                    seen = seen_b + again.events
            # kill -9 the owner in the middle of the tool call.
            proc_a.kill()
            await proc_a.wait()
            async with connect(port_b, after=seen[-1]["seq"]) as on_b:
                await on_b.until(lambda e: e["type"] == "interrupted", timeout=15)
                recovered = on_b.events
                assert [e["type"] for e in recovered] == ["interrupt", "tool_result", "interrupted"]
                assert recovered[1]["status"] == "cancelled"
                assert "recovered by" in recovered[2]["reason"]
                await on_b.send(op="resume", instruction=None)
                await on_b.until(lambda e: e["type"] == "done")
                seen += on_b.events
        async with open_redis_log(redis_server.url, prefix=prefix) as log:
            stored = await log.read("s")
        check_invariants(stored)
        assert_covers(seen, stored)
        assert stored[-1].status == "completed"  # type: ignore[attr-defined]
        assert stored[-1].text == "recovered and done."  # type: ignore[attr-defined]


# ---- the owner decides ----------------------------------------------------------------


def hold_back(session: Session, types: Sequence[str]) -> trio_agent.Subscription:
    """Hold back this process's copy of ``session``: a lossless subscriber that never
    reads.  It takes the first event of ``types`` and blocks the session's relay at the
    second, so what the replica shows lags the owner from there on (as a slow network
    would make it)."""
    return session.open_subscription(types=types, capacity=1, policy="block", stall_timeout=1e9)


async def test_a_command_through_a_lagging_replica_is_judged_by_the_owner(
    redis_server: RedisServer, prefix: str
) -> None:
    """Issue 10 §3: B, on a replica, hard-interrupts A's run during a tool call and
    resumes as soon as the owner shows ``interrupted`` — before B's own copy has it.
    The owner decides the resume against the true state; B's lag is no reason to
    refuse it."""
    with trio.fail_after(30):
        async with (
            redis_runtime(redis_server, prefix, "a", slow_script(nap=30).model()) as (rt_a, _),
            redis_runtime(redis_server, prefix, "b", slow_script(nap=30).model()) as (rt_b, _),
        ):
            owner = await rt_a.open_session("r1")
            replica = await rt_b.open_session("r1")
            # The replica takes ``interrupt`` and stops at ``interrupted``.
            held = hold_back(replica, ["interrupt", "interrupted"])
            await owner.send("go")
            await wait_for(replica, lambda s: [c.status for c in s.tool_calls] == ["running"])
            await replica.interrupt("hard", reason="from b")
            await wait_for(owner, lambda s: s.status == "interrupted")
            assert replica.state.status == "acting"  # the lag is real
            assert replica.state.seq < owner.state.seq

            await replica.resume("carry on")  # the owner's state says: interrupted

            resumes = [e for e in owner.log if isinstance(e, ev.Resume)]
            assert [r.instruction for r in resumes] == ["carry on"]
            held.close()
            await wait_for(owner, lambda s: s.status == "done")
            await wait_for(replica, lambda s: s.seq == owner.state.seq)
            assert wires(list(replica.log)) == wires(list(owner.log))
            check_invariants(list(owner.log), owner.state)


async def test_a_refusal_through_a_replica_is_the_owners_and_nothing_is_applied(
    redis_server: RedisServer, prefix: str
) -> None:
    """The replica's lagging copy shows ``interrupted`` (it would let a resume through);
    the owner's run is done: the owner refuses, with its own message, to the caller."""
    with trio.fail_after(30):
        async with (
            redis_runtime(redis_server, prefix, "a", slow_script(nap=30).model()) as (rt_a, _),
            redis_runtime(redis_server, prefix, "b", slow_script(nap=30).model()) as (rt_b, _),
        ):
            owner = await rt_a.open_session("r2")
            replica = await rt_b.open_session("r2")
            # The replica takes ``interrupted`` and stops at the ``resume`` after it.
            held = hold_back(replica, ["interrupted", "resume"])
            await owner.send("go")
            await wait_for(owner, lambda s: [c.status for c in s.tool_calls] == ["running"])
            await owner.interrupt("hard")
            await wait_for(replica, lambda s: s.status == "interrupted")
            await owner.resume()
            await wait_for(owner, lambda s: s.status == "done")
            assert replica.state.status == "interrupted"  # the lag is real
            before = wires(list(owner.log))

            with pytest.raises(
                trio_agent.SessionStateError,
                match=r"^can't resume session 'r2': it is done, not interrupted$",
            ):
                await replica.resume("again")

            assert wires(list(owner.log)) == before  # nothing was applied
            held.close()
            await wait_for(replica, lambda s: s.seq == owner.state.seq)
            assert wires(list(replica.log)) == before


async def test_a_forwarded_cancel_returns_once_the_owner_published_done(
    redis_server: RedisServer, prefix: str
) -> None:
    """The owner sends a ``cancel``'s verdict after the ``done`` it waits for, so a
    replica's ``cancel`` means what it means in one process."""
    with trio.fail_after(30):
        async with (
            redis_runtime(redis_server, prefix, "a", slow_script(nap=30).model()) as (rt_a, _),
            redis_runtime(redis_server, prefix, "b", slow_script(nap=30).model()) as (rt_b, _),
        ):
            owner = await rt_a.open_session("r3")
            replica = await rt_b.open_session("r3")
            await replica.send("go")
            await wait_for(replica, lambda s: [c.status for c in s.tool_calls] == ["running"])
            await replica.cancel()
            last = list(owner.log)[-1]
            assert isinstance(last, ev.Done) and last.status == "cancelled"
            with pytest.raises(
                trio_agent.SessionStateError,
                match=r"^can't cancel session 'r3': it is done, not running or interrupted$",
            ):
                await replica.cancel()


async def hold_lease(log: RedisLog, session: str) -> str:
    """A process that holds ``session``'s lease (no expiry) and never serves it: what
    a hung owner looks like from Redis.  Returns the lease key (delete it to let go)."""
    key = log.key(session, "owner")
    await log.client.set(key, "ghost:" + session)
    return key


async def test_no_verdict_within_the_reply_timeout_raises_and_says_the_command_may_still_apply(
    redis_server: RedisServer, prefix: str
) -> None:
    timeout = 0.5
    model = ScriptBuilder().turn(["hi", "!"]).model()
    with trio.fail_after(20):
        async with redis_runtime(redis_server, prefix, "b", model, reply_timeout=timeout) as (
            rt,
            log,
        ):
            lease = await hold_lease(log, "t")
            replica = await rt.open_session("t")
            assert replica.is_replica
            started = trio.current_time()
            with pytest.raises(
                RedisLogError,
                match=r"^no verdict on 'user_input' from the owner of session 't' within 0\.5s "
                r"\(reply_timeout\): the command was sent and may still be applied later; "
                r"is any process serving the session\?$",
            ):
                await replica.send("hello")
            assert timeout <= trio.current_time() - started < timeout + 1.0
            assert log.statistics().commands_waiting == 0
            # It may still be applied later: here, once this process takes the session
            # over (the ghost lets go), its command reader finds the command.
            await log.client.delete([lease])
            await replica.wait_owned()
            await wait_for(replica, lambda s: s.status == "done")
            assert [e.text for e in replica.log if isinstance(e, ev.UserInput)] == ["hello"]


async def test_a_replica_that_takes_over_while_waiting_applies_its_own_command(
    redis_server: RedisServer, prefix: str
) -> None:
    """The forwarding call holds nothing the session needs: when its own process takes
    the session over meanwhile, that process's command reader applies the command and
    the verdict comes back the same way."""
    model = ScriptBuilder().turn(["hi", "!"]).model()
    with trio.fail_after(20):
        async with redis_runtime(redis_server, prefix, "b", model) as (rt, log):
            lease = await hold_lease(log, "t")
            replica = await rt.open_session("t")
            sent = trio.Event()

            async def send() -> None:
                await replica.send("hello")
                sent.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.testing.wait_all_tasks_blocked()
                assert log.statistics().commands_waiting == 1 and replica.is_replica
                await log.client.delete([lease])
                await sent.wait()
            assert not replica.is_replica
            assert log.statistics().commands_waiting == 0
            await wait_for(replica, lambda s: s.status == "done")
            assert [e.text for e in replica.log if isinstance(e, ev.UserInput)] == ["hello"]


async def test_a_refused_command_on_a_replicas_server_gets_bad_state_for_that_client_only(
    redis_server: RedisServer, prefix: str
) -> None:
    with trio.fail_after(30):
        async with (
            redis_runtime(redis_server, prefix, "a", ScriptBuilder().turn(["ok"]).model()) as (
                rt_a,
                _,
            ),
            redis_runtime(redis_server, prefix, "b", ScriptBuilder().turn(["ok"]).model()) as (
                rt_b,
                _,
            ),
            trio.open_nursery() as nursery,
        ):
            owner = await rt_a.open_session("s")
            port = await nursery.start(trio_agent.AgentServer(rt_b).serve, "127.0.0.1", 0)
            async with connect(port) as bad, connect(port) as good:
                for client in (bad, good):  # the state snapshot first
                    assert orjson.loads(await client.ws.get_message())[0]["type"] == "state"
                assert rt_b.sessions["s"].is_replica
                await bad.send(op="resume", instruction="go on")
                error = await bad.until(lambda e: e["type"] == "error")
                assert error["code"] == "bad_state" and error["seq"] == 0
                assert error["message"] == "can't resume session 's': it is idle, not interrupted"
                assert len(owner.log) == 0  # nothing was applied
                # The other client got nothing of it: its next event is the run's.
                await good.send(op="user_input", text="hi")
                await good.until(lambda e: e["type"] == "done")
                assert [e for e in good.events if e["type"] == "error"] == []
                assert good.events[0]["type"] == "user_input" and good.events[0]["seq"] == 1
            nursery.cancel_scope.cancel()


def test_the_command_line_shows_the_redis_defaults_without_coredis() -> None:
    # ``serve --help`` and its defaults come from trio_agent.redis.defaults, which needs
    # no Redis client: in-memory serving works without the redis extra.
    code = (
        "import sys; sys.modules['coredis'] = None\n"
        "import trio_agent.redis as r, trio_agent.cli as c\n"
        "args = c.parser().parse_args(['serve'])\n"
        "assert (args.redis_prefix, args.lease_ttl) == (r.DEFAULT_PREFIX, r.DEFAULT_LEASE_TTL)\n"
        "try:\n"
        "    r.open_redis_log\n"
        "except ModuleNotFoundError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == (
        "trio_agent.redis.open_redis_log needs coredis, which is not installed: "
        "pip install 'trio-agent[redis]'"
    )


async def test_an_approval_pending_when_its_owner_dies_is_still_pending_and_runs_once(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    """DESIGN §9: the call waiting for a person never started, so nothing is lost by
    keeping it; the process that recovers the session waits for the same decision, and a
    decision sent to any process (twice, with one id) runs the tool exactly once."""
    script = (
        ScriptBuilder()
        .turn(
            ["let me check"],
            tool_calls=[{"id": "q", "name": "calculator", "arguments": {"expression": "6*7"}}],
        )
        .turn(["it is 42"])
        .build()
    )
    approve = ("--approve", "calculator")
    with trio.fail_after(55):
        async with (
            serve_process(redis_server, prefix, script, tmp_path, "a", *approve) as (
                proc_a,
                port_a,
            ),
            serve_process(redis_server, prefix, script, tmp_path, "b", *approve) as (_, port_b),
        ):
            async with connect(port_a) as on_a:  # A owns the session
                await on_a.send(op="user_input", text="what is 6*7?")
                await on_a.until(lambda e: e["type"] == "tool_approval_requested")
                seen = list(on_a.events)
            proc_a.kill()  # kill -9 while the call waits for a person
            await proc_a.wait()
            async with connect(port_b) as on_b:  # B recovers it: a snapshot first
                await on_b.send(op="approve", call_id="q", approved=True, id="yes-q")
                await on_b.send(op="approve", call_id="q", approved=True, id="yes-q")
                await on_b.until(lambda e: e["type"] == "done", timeout=20)
                if not [e for e in on_b.events if e["type"] == "ack"]:
                    await on_b.until(lambda e: e["type"] == "ack")  # (the repeat's answer)
                pending = on_b.snapshots[0]["state"]["pending_approvals"]
                assert [c["call_id"] for c in pending] == ["q"]  # still pending on B
                assert [e for e in on_b.events if e["type"] == "ack"] == [
                    {
                        "type": "ack",
                        "command_id": "yes-q",
                        "seq": next(e["seq"] for e in on_b.events if e["type"] == "tool_approval"),
                    }
                ]
                seen += [e for e in on_b.events if e["type"] not in ("state", "ack")]
        async with open_redis_log(redis_server.url, prefix=prefix) as log:
            stored = await log.read("s")
    check_invariants(stored)
    kinds = [e.type for e in stored]
    assert kinds.count("tool_approval_requested") == 1
    assert kinds.count("tool_approval") == 1
    assert not [e for e in stored if isinstance(e, ev.Interrupt)]  # not interrupted: it waited on
    results = [e for e in stored if isinstance(e, ev.ToolResult)]
    assert [(r.call_id, r.status, r.result) for r in results] == [("q", "ok", 42)]
    assert stored[-1].status == "completed"  # type: ignore[attr-defined]
    assert stored[-1].text == "it is 42"  # type: ignore[attr-defined]
