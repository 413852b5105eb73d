"""The session log and the bus: seq, replay-then-live, backpressure, eviction, statistics.

The bus is compared with a plain Python model in a hypothesis ``RuleBasedStateMachine``
(``TestBusMachine``), and its edges are pinned down by plain trio tests below it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from trio.testing import MockClock, wait_all_tasks_blocked

from trio_agent import events as ev
from trio_agent import initial_state
from trio_agent._bus import (
    MAX_CAPACITY,
    REPLAY_BATCH,
    TRIM_SLACK,
    BusStatistics,
    EventBus,
    EventLog,
    SubscriberStatistics,
    Subscription,
    event_size,
)
from trio_agent._core.reduce import replay
from trio_agent.errors import LogTrimmed, ReduceError, SubscriberEvicted

STALL = 1.0

# A legal session, forever: run r is 13 events (the bus reduces, so what it publishes
# must be legal).  Steering inputs and errors are legal anywhere and are mixed in.
_CYCLE = 13


def script(i: int) -> ev.Event:
    run, k = divmod(i, _CYCLE)
    run += 1
    call = f"c{run}"
    return [
        lambda: ev.UserInput(run=run - 1, text=f"question {run}"),
        lambda: ev.RunStarted(run=run),
        lambda: ev.Thinking(run=run, step=1),
        lambda: ev.TokenStream(run=run, step=1, text="Let me"),
        lambda: ev.ToolCallStart(run=run, step=1, call_id=call, name="calc"),
        lambda: ev.ToolCallDelta(run=run, step=1, call_id=call, delta='{"x": '),
        lambda: ev.ToolCallDelta(run=run, step=1, call_id=call, delta="1}"),
        lambda: ev.ToolCall(run=run, step=1, call_id=call, name="calc", arguments={"x": 1}),
        lambda: ev.ToolResult(run=run, step=1, call_id=call, status="ok", result=2),
        lambda: ev.Thinking(run=run, step=2),
        lambda: ev.TokenStream(run=run, step=2, text="é"),
        lambda: ev.TokenStream(run=run, step=2, text="🎉"),
        lambda: ev.Done(run=run, step=2, status="completed", text="Let meé🎉"),
    ][k]()


def steer() -> ev.Event:
    return ev.UserInput(text="steer")


TYPE_FILTERS: list[frozenset[str] | None] = [
    None,
    frozenset({"token_stream"}),
    frozenset({"user_input", "thinking"}),
    frozenset({"tool_call_start", "tool_result", "done", "error"}),
]


# ---- the trio side of the state machine ------------------------------------------------


class TrioThread:
    """One trio run, in a worker thread, for the lifetime of one state-machine example.

    Hypothesis' stateful tests are synchronous, and the bus binds to a trio run (its
    ParkingLots reschedule tasks of that run, its timeouts read that run's clock).  So
    each example gets one run in a thread, and each rule runs a short snippet in it with
    ``trio.from_thread.run``, then waits until every task is blocked
    (``wait_all_tasks_blocked``): the machine observes the bus only when it is quiet.
    Background tasks (a publisher waiting for room, a receiver parked in ``receive``)
    live in the run's nursery across rules.  The clock is a ``MockClock`` with no
    autojump: virtual time moves only when a rule calls ``jump``, so a stall is a rule.
    """

    def __init__(self) -> None:
        self.clock = MockClock()
        self.crash: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._target, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "trio thread did not start"

    def _target(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:
            self.crash = exc
            self._ready.set()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
        """Run ``fn`` in the trio thread; ``("ok", value)`` or ``("err", exception)``."""

        async def step() -> tuple[str, Any]:
            try:
                out: tuple[str, Any] = ("ok", fn(*args, **kwargs))
            except Exception as exc:
                out = ("err", exc)
            await wait_all_tasks_blocked()
            return out

        return trio.from_thread.run(step, trio_token=self.token)

    def spawn(self, afn: Callable[[], Awaitable[None]]) -> None:
        self.call(self.nursery.start_soon, afn)

    def stop(self) -> None:
        if self.crash is None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(10)
        assert not self._thread.is_alive()
        if self.crash is not None:
            raise self.crash


@attrs.define
class Task:
    """A background publish or receive, and how it ended."""

    event: ev.Event | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: bool = False
    value: Any = None
    error: Exception | None = None


@attrs.define(eq=False)
class SubModel:
    sub: Subscription
    types: frozenset[str] | None
    policy: str
    capacity: int
    start: int  # it should see the matching events with seq > start
    live: bool  # False while it replays from the log
    received: list[int] = attrs.Factory(list)
    closed: bool = False
    evicted_at: int | None = None  # log's last seq when it was evicted
    receiver: Task | None = None

    def matches(self, event: ev.Event) -> bool:
        return self.types is None or event.type in self.types

    @property
    def active(self) -> bool:
        return not self.closed and self.evicted_at is None

    def expected(self, log: list[ev.Event]) -> list[int]:
        """Every seq a lossless subscriber must get, in order."""
        end = self.evicted_at if self.evicted_at is not None else len(log)
        return [e.seq for e in log if self.start < e.seq <= end and self.matches(e)]

    def remaining(self, log: list[ev.Event]) -> list[int]:
        last = self.received[-1] if self.received else self.start
        return [s for s in self.expected(log) if s > last]

    def full_for(self, event: ev.Event, log: list[ev.Event]) -> bool:
        return (
            self.policy == "block"
            and self.active
            and self.live
            and self.matches(event)
            and len(self.remaining(log)) >= self.capacity
        )

    def next_available(self, log: list[ev.Event]) -> list[int]:
        """What a drain (``receive_batch_nowait``) would return now."""
        rest = self.remaining(log)
        if self.closed or not rest:
            return []
        if self.policy == "block" or not self.live:
            return rest
        return rest[-self.sub.statistics().buffered :] if self.sub.statistics().buffered else []


class BusMachine(RuleBasedStateMachine):
    """The bus against a model: the log is a list; each subscriber must receive exactly
    the log's matching events after its start (lossless), or an increasing subsequence
    with every miss counted (drop_oldest); a publisher blocks iff a lossless live
    subscriber is full; a stall evicts exactly one full subscriber."""

    def __init__(self) -> None:
        super().__init__()
        self.trio = TrioThread()
        self.bus = EventBus("s1")
        self.subs: list[SubModel] = []
        self.kinds: list[str] = []  # the model log: event types in order
        self.next_script = 0
        self.pending: Task | None = None
        self.pending_is_script = False

    def teardown(self) -> None:
        self.trio.stop()

    @property
    def log(self) -> list[ev.Event]:
        return list(self.bus.log)

    # ---- helpers --------------------------------------------------------------------

    def _event(self, kind: str) -> ev.Event:
        if kind == "script" and self.pending is None:
            return script(self.next_script)
        if kind == "error":
            return ev.Error(code="rate_limit", message="slow down", retryable=True)
        return steer()

    def _settle(self) -> None:
        """Account for background tasks that finished during the rule."""
        log = self.log
        if self.pending is not None and self.pending.done:
            assert self.pending.error is None, self.pending.error
            assert self.pending.value.seq == len(log)
            assert self.pending.value.type == self.pending.event.type
            self.kinds.append(self.pending.event.type)
            if self.pending_is_script:
                self.next_script += 1
            self.pending = None
        if self.pending is not None:
            assert any(s.full_for(self.pending.event, log) for s in self.subs)
            assert self.bus.statistics().publishers_waiting == 1
        for s in self.subs:
            r = s.receiver
            if r is not None and r.done:
                if r.error is not None:
                    if isinstance(r.error, SubscriberEvicted):
                        assert s.evicted_at is not None
                    else:
                        assert isinstance(r.error, trio.ClosedResourceError), r.error
                        assert s.closed
                s.receiver = None

    async def _receive(self, s: SubModel, task: Task) -> None:
        with task.scope:
            try:
                event = await s.sub.receive()
            except Exception as exc:
                task.error = exc
            else:
                s.received.append(event.seq)
                task.value = event
        task.done = True

    # ---- rules ------------------------------------------------------------------------

    @rule(
        types=st.sampled_from(TYPE_FILTERS),
        after=st.none() | st.integers(0, 1000),
        policy=st.sampled_from(["block", "block", "drop_oldest"]),
        capacity=st.integers(1, 4),
    )
    def subscribe(
        self, types: frozenset[str] | None, after: int | None, policy: str, capacity: int
    ) -> None:
        last = len(self.kinds)
        if after is not None:
            after %= last + 1
        status, sub = self.trio.call(
            self.bus.open_subscription,
            types=types,
            after=after,
            capacity=capacity,
            policy=policy,
            stall_timeout=STALL,
        )
        assert status == "ok", sub
        live = after is None or after == last
        start = last if after is None else after
        self.subs.append(SubModel(sub, types, policy, capacity, start, live))
        assert sub.statistics().replaying is not live

    @rule(kind=st.sampled_from(["script", "script", "script", "steer", "error", "illegal"]))
    def publish_nowait(self, kind: str) -> None:
        log = self.log
        state = self.bus.state
        event = ev.Resume(instruction="x") if kind == "illegal" else self._event(kind)
        full = any(s.full_for(event, log) for s in self.subs)
        status, out = self.trio.call(self.bus.publish_nowait, event)
        if full or kind == "illegal":
            assert status == "err"
            if full:
                assert isinstance(out, trio.WouldBlock)
            else:
                assert isinstance(out, ReduceError)
                assert str(out) == f"can't apply 'resume' event in state '{state.status}'"
            assert self.bus.state is state
            assert len(self.bus.log) == len(log)
        else:
            assert status == "ok", out
            assert (out.seq, out.session, out.type) == (len(log) + 1, "s1", event.type)
            self.kinds.append(event.type)
            if kind == "script" and self.pending is None:
                self.next_script += 1
        self._settle()

    @precondition(lambda self: self.pending is None)
    @rule(kind=st.sampled_from(["script", "script", "steer"]))
    def publish(self, kind: str) -> None:
        log = self.log
        event = self._event(kind)
        task = Task(event)

        async def run() -> None:
            with task.scope:
                try:
                    task.value = await self.bus.publish(event)
                except Exception as exc:
                    task.error = exc
            task.done = True

        full = any(s.full_for(event, log) for s in self.subs)
        self.pending, self.pending_is_script = task, kind == "script"
        self.trio.spawn(run)
        assert task.done is not full
        self._settle()

    @precondition(lambda self: self.pending is not None)
    @rule()
    def cancel_publish(self) -> None:
        assert self.pending is not None
        state, n = self.bus.state, len(self.bus.log)
        self.trio.call(self.pending.scope.cancel)
        assert self.pending.done and self.pending.scope.cancelled_caught
        assert self.pending.value is None
        assert self.bus.state is state and len(self.bus.log) == n  # published nothing
        assert self.bus.statistics().publishers_waiting == 0
        self.pending = None

    @precondition(lambda self: self.pending is not None)
    @rule()
    def stall(self) -> None:
        assert self.pending is not None
        log = self.log
        full = [s for s in self.subs if s.full_for(self.pending.event, log)]
        assert full
        evictions = self.bus.statistics().evictions
        self.trio.call(self.trio.clock.jump, STALL)
        evicted = [s for s in self.subs if s.evicted_at is None and s.sub.statistics().evicted]
        assert len(evicted) == 1 and evicted[0] in full
        assert self.bus.statistics().evictions == evictions + 1
        s = evicted[0]
        s.evicted_at = len(log)
        assert s.sub.statistics().evicted == (
            f"stalled: no progress for 1s with {s.capacity} events buffered"
        )
        self._settle()

    @precondition(lambda self: self.subs)
    @rule(i=st.integers(0, 100), batch=st.booleans())
    def receive_nowait(self, i: int, batch: bool) -> None:
        s = self.subs[i % len(self.subs)]
        log = self.log
        want = self.subs and s.next_available(log)
        if batch:
            status, out = self.trio.call(s.sub.receive_batch_nowait)
        else:
            status, out = self.trio.call(s.sub.receive_nowait)
        if want:
            assert status == "ok", out
            got = [e.seq for e in out] if batch else [out.seq]
            assert got == (want if batch else want[:1])
            s.received.extend(got)
            if batch and s.evicted_at is None:
                s.live = True  # it drained the replay too
        else:
            assert status == "err"
            if s.closed:
                assert isinstance(out, trio.ClosedResourceError)
                assert str(out) == "subscription was closed"
            elif s.evicted_at is not None:
                assert isinstance(out, SubscriberEvicted)
                last = s.received[-1] if s.received else s.start
                assert out.last_seq == last
                assert str(out) == (
                    f"subscriber evicted: stalled: no progress for 1s with {s.capacity} "
                    f"events buffered (last seq received: {last})"
                )
            else:
                assert isinstance(out, trio.WouldBlock), out
                s.live = True
        self._settle()

    @precondition(lambda self: any(s.receiver is None and not s.closed for s in self.subs))
    @rule(i=st.integers(0, 100))
    def start_receiver(self, i: int) -> None:
        idle = [s for s in self.subs if s.receiver is None and not s.closed]
        s = idle[i % len(idle)]
        want = s.next_available(self.log)
        s.receiver = task = Task()
        n = len(s.received)
        self.trio.spawn(lambda: self._receive(s, task))
        if want:
            assert task.done and s.received[n:] == want[:1]
        elif s.evicted_at is not None:
            assert task.done and isinstance(task.error, SubscriberEvicted)
        else:
            assert not task.done  # parked: it saw nothing, so it is live now
            assert s.sub.statistics().tasks_waiting_receive == 1
            s.live = True
        self._settle()

    @precondition(lambda self: any(s.receiver is not None for s in self.subs))
    @rule(i=st.integers(0, 100))
    def cancel_receiver(self, i: int) -> None:
        waiting = [s for s in self.subs if s.receiver is not None]
        s = waiting[i % len(waiting)]
        task = s.receiver
        assert task is not None
        n = len(s.received)
        self.trio.call(task.scope.cancel)
        assert task.done and task.scope.cancelled_caught and task.value is None
        assert len(s.received) == n  # took nothing
        assert s.sub.statistics().tasks_waiting_receive == 0
        s.receiver = None
        self._settle()

    @precondition(lambda self: any(s.receiver is not None for s in self.subs))
    @rule(i=st.integers(0, 100), kind=st.sampled_from(["script", "steer"]))
    def cancel_receiver_and_publish(self, i: int, kind: str) -> None:
        """The race of a receiver that waits with a timeout: its scope is cancelled and
        an event is published in the same scheduling step, before the receiver runs.
        It ends cancelled, having taken nothing; the event waits in its buffer, and
        the next receiver that parks is woken by the next publish (see the invariant
        ``parked_receivers_have_nothing_to_receive``)."""
        waiting = [s for s in self.subs if s.receiver is not None]
        s = waiting[i % len(waiting)]
        task = s.receiver
        assert task is not None
        n = len(s.received)
        log = self.log
        event = self._event(kind)
        full = any(x.full_for(event, log) for x in self.subs)

        def both() -> ev.Event:
            task.scope.cancel()
            return self.bus.publish_nowait(event)

        status, out = self.trio.call(both)
        assert task.done and task.scope.cancelled_caught and task.value is None
        assert len(s.received) == n  # took nothing: the event is still for it
        if full:
            assert status == "err" and isinstance(out, trio.WouldBlock), out
        else:
            assert status == "ok", out
            self.kinds.append(event.type)
            if kind == "script" and self.pending is None:
                self.next_script += 1
        s.receiver = None
        self._settle()

    @precondition(lambda self: any(not s.closed for s in self.subs))
    @rule(i=st.integers(0, 100))
    def close(self, i: int) -> None:
        open_ = [s for s in self.subs if not s.closed]
        s = open_[i % len(open_)]
        self.trio.call(s.sub.close)
        s.closed = True
        self._settle()

    # ---- invariants (DESIGN §3) ------------------------------------------------------------

    @invariant()
    def inv1_seq_is_gapless_and_the_log_is_the_model(self) -> None:
        log = self.log
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        assert [e.type for e in log] == self.kinds
        assert self.bus.log.last_seq == len(log)
        assert self.trio.crash is None

    @invariant()
    def inv5_replaying_the_log_gives_the_live_state(self) -> None:
        assert replay(self.log, initial_state("s1")) == self.bus.state

    @invariant()
    def inv6_lossless_subscribers_see_every_event_in_order(self) -> None:
        log = self.log
        for s in self.subs:
            received = s.received
            if s.policy == "block":
                assert received == s.expected(log)[: len(received)]
            else:
                matching = [e.seq for e in log if e.seq > s.start and s.matches(e)]
                assert sorted(set(received)) == received
                assert set(received) <= set(matching)

    @invariant()
    def parked_receivers_have_nothing_to_receive(self) -> None:
        """No lost wake-up: a receiver still parked has nothing it could take."""
        log = self.log
        for s in self.subs:
            if s.receiver is not None and not s.receiver.done:
                assert s.next_available(log) == [], (
                    f"subscriber {s.sub.id} is parked in receive() with "
                    f"{s.next_available(log)} waiting for it"
                )

    @invariant()
    def inv7_no_buffer_over_capacity(self) -> None:
        log = self.log
        listed = {st.id for st in self.bus.statistics().subscribers}
        assert {s.sub.id for s in self.subs if s.active} <= listed
        assert listed <= {s.sub.id for s in self.subs if not s.closed}
        for s in self.subs:
            stats = s.sub.statistics()
            assert stats.buffered <= stats.peak <= s.capacity
            assert stats.delivered == len(s.received)
            assert stats.replaying is not s.live
            if s.closed or not s.live:
                assert stats.buffered == 0
            elif s.policy == "block":
                assert stats.buffered == len(s.remaining(log))
                assert stats.dropped == 0
            else:
                matching = [e.seq for e in log if e.seq > s.start and s.matches(e)]
                assert stats.buffered == min(s.capacity, len(s.remaining(log)))
                assert len(s.received) + stats.buffered + stats.dropped == len(matching)


TestBusMachine = BusMachine.TestCase
TestBusMachine.settings = settings(stateful_step_count=40, max_examples=200)


# ---- plain tests ---------------------------------------------------------------------------


def token(text: str = "x") -> ev.TokenStream:
    return ev.TokenStream(run=1, step=1, text=text)


async def running_bus(**kwargs: Any) -> EventBus:
    """A bus whose session is in a step, so token_stream events are legal."""
    bus = EventBus("s1", clock=lambda: 42.0, **kwargs)
    bus.publish_nowait(ev.RunStarted(run=1))
    bus.publish_nowait(ev.Thinking(run=1, step=1))
    return bus


async def test_a_long_replay_comes_in_bounded_slices_equal_to_what_was_published() -> None:
    """A token is kept compact and built again when read: a replay of a long log gives
    back events equal to the published ones, gapless, at most ``REPLAY_BATCH`` per
    receive, then goes live."""
    with trio.fail_after(10):
        bus = await running_bus()
        published = [bus.publish_token_nowait(1, 1, str(i)) for i in range(2 * REPLAY_BATCH + 5)]
        published.append(bus.publish_nowait(ev.UserInput(text="steer")))
        sub = bus.open_subscription(after=2)
        got: list[ev.Event] = []
        while len(got) < len(published):
            batch = sub.receive_batch_nowait()
            assert 1 <= len(batch) <= REPLAY_BATCH
            got.extend(batch)
        assert got == published and [e.seq for e in got] == list(range(3, 3 + len(got)))
        assert not sub.statistics().replaying
        live = bus.publish_token_nowait(1, 1, "live")
        assert sub.receive_batch_nowait() == [live]


async def test_publish_stamps_a_copy() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        event = token("hi")
        stamped = await bus.publish(event)
        assert (stamped.session, stamped.seq, stamped.ts, stamped.text) == ("s1", 3, 42.0, "hi")
        assert (event.session, event.seq, event.ts) == ("", 0, 0.0)
        assert list(bus.log)[-1] == stamped  # (a token: kept compact, built again equal)
        assert str(bus.state.text) == "hi" and bus.state.seq == 3


async def test_illegal_event_publishes_nothing() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe() as sub:
            state = bus.state
            message = r"^can't apply 'resume' event in state 'thinking'$"
            with pytest.raises(ReduceError, match=message):
                await bus.publish(ev.Resume())
            assert bus.state is state
            assert bus.log.last_seq == 2
            with pytest.raises(trio.WouldBlock):
                sub.receive_nowait()
            assert (await bus.publish(token())).seq == 3  # the seq was not used up


async def test_log_trimmed_names_the_oldest_seq_held() -> None:
    with trio.fail_after(5):
        bus = await running_bus(log=EventLog(max_events=3))
        for _ in range(3):
            await bus.publish(token())
        assert (bus.log.first_seq, bus.log.last_seq, len(bus.log)) == (3, 5, 3)
        with pytest.raises(
            LogTrimmed,
            match=r"^events after seq 1 were trimmed from the log; the oldest seq still held is 3$",
        ) as info:
            bus.log.replay(after=1)
        assert (info.value.after, info.value.oldest) == (1, 3)
        with pytest.raises(LogTrimmed) as info:
            bus.open_subscription(after=0)
        assert (info.value.after, info.value.oldest) == (0, 3)
        assert [e.seq for e in bus.log.replay(after=2)] == [3, 4, 5]
        assert bus.log.replay(after=5) == []
        with pytest.raises(LogTrimmed, match=r"^events after seq 1 .* is 3$"):
            bus.log.get(2)
        with pytest.raises(IndexError, match=r"^seq 6 is not in the log yet \(last seq: 5\)$"):
            bus.log.get(6)


async def test_replaying_subscriber_overtaken_by_trimming_gets_log_trimmed() -> None:
    with trio.fail_after(5):
        bus = await running_bus(log=EventLog(max_events=4))
        sub = bus.open_subscription(after=0)
        assert sub.receive_nowait().seq == 1
        for _ in range(4):
            await bus.publish(token())  # the log now holds 3..6
        message = r"^events after seq 1 were trimmed from the log; the oldest seq still held is 3$"
        with pytest.raises(LogTrimmed, match=message):
            sub.receive_nowait()
        with pytest.raises(LogTrimmed, match=message):  # and again: never a silent gap
            await sub.receive()
        (stats,) = bus.statistics().subscribers  # listed until its owner closes it
        assert (stats.id, stats.delivered, stats.buffered) == (sub.id, 1, 0)
        await bus.publish(token())  # it holds nothing back
        sub.close()
        assert bus.statistics().subscribers == ()


async def test_log_count_bound_holds_across_compaction() -> None:
    with trio.fail_after(10):
        bus = await running_bus(log=EventLog(max_events=10))
        for i in range(3000):
            bus.publish_nowait(token(str(i)))
        log = bus.log
        assert (len(log), log.first_seq, log.last_seq) == (10, 2993, 3002)
        assert [e.seq for e in log.replay(after=2992)] == list(range(2993, 3003))
        assert [e.text for e in log.replay(after=3000)] == ["2998", "2999"]
        assert log.bytes == sum(event_size(e) for e in log)
        stats = bus.statistics()
        assert (stats.log_events, stats.log_bytes, stats.first_seq, stats.last_seq) == (
            10,
            log.bytes,
            2993,
            3002,
        )


async def test_log_byte_bound() -> None:
    with trio.fail_after(5):
        bus = await running_bus(log=EventLog(max_bytes=2000))
        for _ in range(20):
            await bus.publish(token("y" * 300))  # 500 bytes each by the estimate
        assert event_size(token("y" * 300)) == 500
        assert bus.log.bytes <= 2000
        assert len(bus.log) == 4 and bus.log.last_seq == 22
        huge = await bus.publish(token("z" * 10_000))
        assert list(bus.log) == [huge]  # the newest event is always kept
        assert bus.log.bytes == event_size(huge)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 200),
    st.integers(1, 20_000),
    st.lists(st.integers(0, 3_000), min_size=1, max_size=600),
)
def test_log_keeps_the_newest_suffix_within_both_bounds(
    max_events: int, max_bytes: int, lengths: list[int]
) -> None:
    """After every append the log holds the newest events, gapless, their sizes
    counted exactly; within the count bound (plus its batch slack) and the byte bound
    (or just the newest event); and a trim leaves no more than the bounds allow."""
    log = EventLog(max_events=max_events, max_bytes=max_bytes)
    slack = max_events // TRIM_SLACK
    sizes: dict[int, int] = {}  # seq -> its size, for every event appended
    for seq, n in enumerate(lengths, start=1):
        held_before = len(log)
        event = ev.TokenStream(session="s", seq=seq, text="x" * n)
        sizes[seq] = event_size(event)
        log.append(event)
        events = list(log)
        assert [e.seq for e in events] == list(range(log.first_seq, seq + 1))
        assert log.last_seq == seq and len(log) == len(events) >= 1
        assert log.bytes == sum(sizes[e.seq] for e in events)
        assert log.bytes <= max_bytes or len(log) == 1
        assert len(log) <= max_events + slack
        if len(log) <= held_before:  # it trimmed: down to the bounds, not past them
            oldest_gone = log.first_seq - 1
            assert len(log) <= max_events
            assert len(log) == max_events or log.bytes + sizes[oldest_gone] > max_bytes


def test_log_validation() -> None:
    message = r"^log bounds must be positive, got max_events=0, max_bytes=5$"
    with pytest.raises(ValueError, match=message):
        EventLog(max_events=0, max_bytes=5)
    log = EventLog()
    with pytest.raises(ValueError, match=r"^log append of seq 2, expected 1$"):
        log.append(ev.Thinking(seq=2))
    with pytest.raises(ValueError, match=r"^after must be >= 0, got -1$"):
        log.replay(after=-1)


async def test_subscription_validation() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        cases: list[tuple[dict[str, Any], str]] = [
            ({"capacity": 0}, rf"capacity must be between 1 and {MAX_CAPACITY}, got 0"),
            (
                {"capacity": MAX_CAPACITY + 1},
                rf"capacity must be between 1 and {MAX_CAPACITY}, got {MAX_CAPACITY + 1}",
            ),
            ({"policy": "latest"}, r"policy must be 'block' or 'drop_oldest', got 'latest'"),
            ({"stall_timeout": 0}, r"stall_timeout must be positive, got 0"),
            ({"types": ["token_stream", "fly"]}, r"unknown event types \['fly'\]"),
            ({"after": -1}, r"after must be >= 0, got -1"),
            ({"after": 3}, r"after=3 is beyond the newest seq 2 of session 's1'"),
        ]
        for kwargs, message in cases:
            with pytest.raises(ValueError, match=f"^{message}$"):
                bus.open_subscription(**kwargs)
        assert bus.statistics().subscribers == ()


async def test_peak_is_the_most_a_buffer_held_through_receives_and_close() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        sub = bus.open_subscription(capacity=8)
        for i in range(5):
            bus.publish_nowait(token(str(i)))
        assert sub.statistics().peak == 5  # (still held: nothing shrank it yet)
        sub.receive_nowait()
        sub.receive_batch_nowait()
        for i in range(3):
            bus.publish_nowait(token(str(i)))
        assert (sub.statistics().buffered, sub.statistics().peak) == (3, 5)
        for i in range(4):
            bus.publish_nowait(token(str(i)))
        sub.close()
        assert (sub.statistics().buffered, sub.statistics().peak) == (0, 7)


async def test_drop_oldest_never_blocks_and_counts_drops() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe(capacity=3, policy="drop_oldest") as sub:
            for i in range(10):
                await bus.publish(token(str(i)))
            stats = sub.statistics()
            assert (stats.buffered, stats.peak, stats.dropped, stats.delivered) == (3, 3, 7, 0)
            assert bus.statistics().publishers_waiting == 0
            batch = sub.receive_batch_nowait()
            assert [e.text for e in batch] == ["7", "8", "9"]  # the oldest were dropped
            assert [e.seq for e in batch] == [10, 11, 12]
            assert sub.statistics().delivered == 3


async def test_block_policy_backpressure_and_publish_nowait() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe(capacity=2) as sub, trio.open_nursery() as nursery:
            bus.publish_nowait(token("a"))
            bus.publish_nowait(token("b"))
            with pytest.raises(trio.WouldBlock):
                bus.publish_nowait(token("c"))
            assert bus.log.last_seq == 4
            published: list[ev.Event] = []

            async def publisher() -> None:
                published.append(await bus.publish(token("c")))

            nursery.start_soon(publisher)
            await wait_all_tasks_blocked()
            assert published == [] and bus.statistics().publishers_waiting == 1
            assert sub.receive_nowait().text == "a"
            await wait_all_tasks_blocked()
            assert [e.text for e in published] == ["c"]
            assert [e.text for e in sub.receive_batch_nowait()] == ["b", "c"]


async def test_type_filter_full_subscriber_does_not_block_other_types() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe(types=["user_input"], capacity=1) as sub:
            bus.publish_nowait(ev.UserInput(text="1"))
            for _ in range(5):
                bus.publish_nowait(token())  # not for sub: never blocks
            with pytest.raises(trio.WouldBlock):
                bus.publish_nowait(ev.UserInput(text="2"))
            assert [e.type for e in sub.receive_batch_nowait()] == ["user_input"]


async def test_stalled_subscriber_is_evicted_and_drains_first(
    autojump_clock: MockClock,
) -> None:
    with trio.fail_after(60):
        bus = await running_bus()
        other = bus.open_subscription(capacity=100)
        sub = bus.open_subscription(capacity=2, stall_timeout=5)
        await bus.publish(token("a"))
        await bus.publish(token("b"))
        start = trio.current_time()
        stamped = await bus.publish(token("c"))  # waits 5 s of virtual time, then evicts
        assert trio.current_time() - start == pytest.approx(5)
        assert stamped.seq == 5
        reason = "stalled: no progress for 5s with 2 events buffered"
        assert sub.statistics().evicted == reason
        assert [e.text for e in sub.receive_batch_nowait()] == ["a", "b"]
        with pytest.raises(SubscriberEvicted) as info:
            await sub.receive()
        assert str(info.value) == f"subscriber evicted: {reason} (last seq received: 4)"
        assert (info.value.reason, info.value.last_seq) == (reason, 4)
        assert isinstance(info.value, trio.BrokenResourceError)
        # Re-attach after the last seq received: nothing lost, nothing twice.
        async with bus.subscribe(after=info.value.last_seq) as again:
            assert [e.seq for e in again.receive_batch_nowait()] == [5]
        assert [e.seq for e in other.receive_batch_nowait()] == [3, 4, 5]


async def test_stall_timer_restarts_on_progress(autojump_clock: MockClock) -> None:
    with trio.fail_after(60):
        bus = await running_bus()
        async with bus.subscribe(capacity=1, stall_timeout=5) as sub, trio.open_nursery() as n:
            await bus.publish(token("0"))

            async def publisher() -> None:
                for i in range(1, 4):
                    await bus.publish(token(str(i)))

            n.start_soon(publisher)
            got = []
            for _ in range(3):
                await trio.sleep(4)  # virtual time: under the timeout each time
                got.append(sub.receive_nowait().text)
            await wait_all_tasks_blocked()
            assert sub.statistics().evicted is None  # 12 s blocked in all, never 5 in a row
            got.append(sub.receive_nowait().text)
            assert got == ["0", "1", "2", "3"]


async def test_bus_statistics_list_an_evicted_subscriber(autojump_clock: MockClock) -> None:
    # Issue 2: statistics() per subscriber includes `evicted`: an evicted subscriber
    # stays listed (its buffer is still pinned) until its owner closes it.
    with trio.fail_after(60):
        bus = await running_bus()
        sub = bus.open_subscription(capacity=1, stall_timeout=1)
        await bus.publish(token())
        await bus.publish(token())
        (stats,) = bus.statistics().subscribers
        assert stats.id == sub.id
        assert stats.evicted == "stalled: no progress for 1s with 1 events buffered"
        assert stats.buffered == 1
        sub.close()
        assert bus.statistics().subscribers == ()


async def test_cancelled_receiver_loses_nothing_and_blocks_no_one() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe(capacity=1) as a, bus.subscribe(capacity=1) as b:
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def receiver() -> None:
                    with scope:
                        await a.receive()
                        raise AssertionError("the receive was cancelled, nothing to get")

                nursery.start_soon(receiver)
                await wait_all_tasks_blocked()
                assert a.statistics().tasks_waiting_receive == 1
                scope.cancel()
            assert a.statistics().tasks_waiting_receive == 0
            await bus.publish(token("after"))  # does not wait: a has room
            assert a.receive_nowait().text == "after"
            assert b.receive_nowait().text == "after"


async def test_receiver_woken_then_cancelled_still_gets_the_event() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe(capacity=1) as sub, trio.open_nursery() as nursery:
            scope = trio.CancelScope()
            got: list[ev.Event] = []

            async def receiver() -> None:
                with scope:
                    got.append(await sub.receive())

            nursery.start_soon(receiver)
            await wait_all_tasks_blocked()
            bus.publish_nowait(token("x"))  # wakes the receiver…
            scope.cancel()  # …and cancels it before it runs
            await wait_all_tasks_blocked()
            leftover = sub.receive_batch_nowait() if sub.statistics().buffered else []
            assert [e.text for e in got + leftover] == ["x"]  # exactly once


async def test_every_parked_receiver_is_woken_whatever_parks_and_leaves_between() -> None:
    # A burst wakes parked receivers once; a receiver that parks after that wake-up,
    # or alongside one cancelled while parked, is still woken by the next event.
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe(capacity=8) as sub, trio.open_nursery() as nursery:
            got: list[str] = []

            async def receiver(scope: trio.CancelScope) -> None:
                with scope:
                    got.append((await sub.receive()).text)  # type: ignore[attr-defined]

            first, cancelled, late = trio.CancelScope(), trio.CancelScope(), trio.CancelScope()
            nursery.start_soon(receiver, first)
            nursery.start_soon(receiver, cancelled)
            await wait_all_tasks_blocked()
            cancelled.cancel()  # leaves while parked
            await wait_all_tasks_blocked()
            bus.publish_nowait(token("a"))  # wakes `first`
            nursery.start_soon(receiver, late)  # parks before `first` has run
            await wait_all_tasks_blocked()
            assert got == ["a"]  # `first` ran; `late` is parked
            bus.publish_nowait(token("b"))
            await wait_all_tasks_blocked()
            assert got == ["a", "b"]
            nursery.start_soon(receiver, trio.CancelScope())
            await wait_all_tasks_blocked()
            bus.publish_nowait(token("c"))  # a later park is woken as well
            await wait_all_tasks_blocked()
            assert sorted(got) == ["a", "b", "c"]


@pytest.mark.parametrize("policy", ["block", "drop_oldest"])
async def test_a_receiver_cancelled_as_an_event_arrives_does_not_lose_later_wake_ups(
    policy: str, autojump_clock: MockClock
) -> None:
    # A UI consumer that waits with a timeout (a heartbeat): its wait is cancelled in
    # the very step an event is published, before it runs.  It ends cancelled with
    # the event left in its buffer; it takes that event next time, and a later wait
    # is still woken by the next publish.
    with trio.fail_after(60):
        bus = await running_bus()
        async with bus.subscribe(capacity=8, policy=policy) as sub:  # type: ignore[arg-type]
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def wait_once() -> None:
                    with scope:
                        await sub.receive()
                    assert scope.cancelled_caught

                nursery.start_soon(wait_once)
                await wait_all_tasks_blocked()
                scope.cancel()
                bus.publish_nowait(token("a"))  # same step: the receiver has not run
            assert sub.statistics().tasks_waiting_receive == 0
            assert (await sub.receive()).text == "a"  # type: ignore[attr-defined]

            texts: list[str] = []
            for text in ("b", "c"):
                async with trio.open_nursery() as nursery:

                    async def heartbeat_receive() -> None:
                        with trio.move_on_after(30):
                            texts.append((await sub.receive()).text)  # type: ignore[attr-defined]

                    nursery.start_soon(heartbeat_receive)
                    await wait_all_tasks_blocked()
                    assert sub.statistics().tasks_waiting_receive == 1
                    start = trio.current_time()
                    bus.publish_nowait(token(text))
                assert trio.current_time() == start  # woken at once, not by its timeout
            assert texts == ["b", "c"]


async def test_publish_cancelled_while_waiting_publishes_nothing() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe(capacity=1) as full, bus.subscribe(policy="drop_oldest") as lossy:
            await bus.publish(token("a"))
            state = bus.state
            async with trio.open_nursery() as nursery:
                cancel = trio.CancelScope()

                async def publisher_task() -> None:
                    with cancel:
                        await bus.publish(token("never"))
                        raise AssertionError("publish should have waited")

                nursery.start_soon(publisher_task)
                await wait_all_tasks_blocked()
                assert bus.statistics().publishers_waiting == 1
                cancel.cancel()
            assert bus.statistics().publishers_waiting == 0
            assert bus.state is state and bus.log.last_seq == 3
            assert [e.text for e in lossy.receive_batch_nowait()] == ["a"]
            assert [e.text for e in full.receive_batch_nowait()] == ["a"]
            assert (await bus.publish(token("b"))).seq == 4


async def test_replay_then_live_has_no_seam_under_concurrent_publishing() -> None:
    with trio.fail_after(10):
        bus = await running_bus()
        for i in range(20):
            await bus.publish(token(str(i)))
        received: dict[str, list[int]] = {"all": [], "tokens": []}
        async with trio.open_nursery() as nursery:

            async def publisher() -> None:
                for i in range(200):
                    await bus.publish(token(str(i)) if i % 3 else ev.UserInput(text="s"))

            async def consumer(name: str, after: int, types: list[str] | None) -> None:
                async with bus.subscribe(after=after, types=types, capacity=2) as sub:
                    while len(received[name]) < (220 if types is None else 145):
                        received[name].append((await sub.receive()).seq)

            nursery.start_soon(consumer, "all", 2, None)
            nursery.start_soon(consumer, "tokens", 10, ["token_stream"])
            nursery.start_soon(publisher)
        log = list(bus.log)
        assert received["all"] == list(range(3, 223))
        assert received["tokens"] == [e.seq for e in log if e.seq > 10 and e.type == "token_stream"]


async def test_many_publishers_keep_seq_gapless() -> None:
    with trio.fail_after(10):
        bus = await running_bus()
        async with bus.subscribe(capacity=1) as sub, trio.open_nursery() as nursery:

            async def publisher(k: int) -> None:
                for i in range(20):
                    await bus.publish(token(f"{k}.{i}"))

            for k in range(10):
                nursery.start_soon(publisher, k)
            seqs = [(await sub.receive()).seq for _ in range(200)]
        assert seqs == list(range(3, 203))
        assert [e.seq for e in bus.log] == list(range(1, 203))
        texts = [e.text for e in bus.log if isinstance(e, ev.TokenStream)]
        for k in range(10):  # each publisher's events in its own order
            assert [t for t in texts if t.startswith(f"{k}.")] == [f"{k}.{i}" for i in range(20)]
        assert replay(bus.log, initial_state("s1")) == bus.state


async def test_statistics_values() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        a = bus.open_subscription(capacity=4)
        b = bus.open_subscription(capacity=2, policy="drop_oldest", types=["token_stream"])
        c = bus.open_subscription(after=0, capacity=8)
        for _ in range(3):
            bus.publish_nowait(token())
        bus.publish_nowait(ev.UserInput(text="hi"))
        a.receive_nowait()
        c.receive_nowait()
        stats = bus.statistics()
        assert isinstance(stats, BusStatistics)
        assert stats == BusStatistics(
            log_events=6,
            log_bytes=bus.log.bytes,
            first_seq=1,
            last_seq=6,
            publishers_waiting=0,
            subscribers=(
                SubscriberStatistics(
                    id=a.id,
                    policy="block",
                    capacity=4,
                    buffered=3,
                    peak=4,
                    delivered=1,
                    dropped=0,
                    replaying=False,
                    evicted=None,
                    tasks_waiting_receive=0,
                ),
                SubscriberStatistics(
                    id=b.id,
                    policy="drop_oldest",
                    capacity=2,
                    buffered=2,
                    peak=2,
                    delivered=0,
                    dropped=1,
                    replaying=False,
                    evicted=None,
                    tasks_waiting_receive=0,
                ),
                SubscriberStatistics(
                    id=c.id,
                    policy="block",
                    capacity=8,
                    buffered=0,
                    peak=0,
                    delivered=1,
                    dropped=0,
                    replaying=True,
                    evicted=None,
                    tasks_waiting_receive=0,
                ),
            ),
            dropped=1,
            evictions=0,
        )
        assert bus.log.bytes == sum(event_size(e) for e in bus.log)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            stats.log_events = 0  # type: ignore[misc]
        a.close()
        a.close()  # idempotent
        assert [s.id for s in bus.statistics().subscribers] == [b.id, c.id]
        b.close()  # (the bus's totals outlive the subscriber)
        assert (bus.statistics().dropped, len(bus.statistics().subscribers)) == (1, 1)
        with pytest.raises(trio.ClosedResourceError, match=r"^subscription was closed$"):
            a.receive_nowait()


async def test_subscribe_closes_on_exit_and_bus_close_drains_then_ends() -> None:
    with trio.fail_after(5):
        bus = await running_bus()
        async with bus.subscribe() as sub:
            await bus.publish(token("last"))
            blocked = bus.open_subscription(capacity=1)
            bus.publish_nowait(token("fills"))
            async with trio.open_nursery() as nursery:
                errors: list[Exception] = []

                async def publisher() -> None:
                    try:
                        await bus.publish(token("too late"))
                    except trio.ClosedResourceError as exc:
                        errors.append(exc)

                nursery.start_soon(publisher)
                await wait_all_tasks_blocked()
                bus.close()
                bus.close()  # idempotent
            assert [str(e) for e in errors] == ["session 's1' is closed"]
            assert [e.text for e in sub.receive_batch_nowait()] == ["last", "fills"]
            with pytest.raises(trio.EndOfChannel):
                await sub.receive()
            assert [e.text for e in blocked.receive_batch_nowait()] == ["fills"]
            with pytest.raises(trio.ClosedResourceError, match=r"^session 's1' is closed$"):
                bus.publish_nowait(token())
            with pytest.raises(trio.ClosedResourceError, match=r"^session 's1' is closed$"):
                bus.open_subscription()
        with pytest.raises(trio.ClosedResourceError):
            sub.receive_nowait()
