"""The session log and the bus: one writer, bounded fan-out, replay-then-live.

``EventBus.publish`` is the single point where a session's facts become events: it
reduces the event (an illegal event raises and changes nothing), assigns the next
``seq``, appends to the bounded :class:`EventLog`, and hands the event to every
subscriber — all synchronously, with no checkpoint in between, so ``seq`` is gapless
however many tasks publish.

Each :class:`Subscription` is a bounded channel (a ``ReceiveChannel``) with a policy:

- ``block`` (lossless): when its buffer is full, the publisher waits for room before it
  publishes anything (so a publisher cancelled while waiting has published nothing, and
  no subscriber misses an event another one got).  A subscriber that makes no progress
  for ``stall_timeout`` is evicted: it drains what it holds, then ``receive`` raises
  :class:`SubscriberEvicted` with the reason and the last seq it got, so it can
  re-attach with ``after=`` and replay.
- ``drop_oldest`` (lossy): never blocks the publisher; a full buffer drops its oldest
  event and counts it.

Why not ``trio.open_memory_channel``: a lossless fan-out must wait for room in *every*
channel before committing an event (trio's channels can only wait by sending), a
``drop_oldest`` channel must drop from the sending side, and an evicted subscriber must
learn why.  The buffers here are plain bounded deques with ``ParkingLot`` wake-ups — the
same design as trio's memory channels, with those three additions.

Replay-then-live has no seam: a subscriber created with ``after=`` reads the log from a
cursor, and switches to its live buffer in the same synchronous step in which the cursor
reaches the newest event.  The publisher never writes into a replaying subscriber's
buffer (the events are in the log), so nothing is delivered twice and nothing is missed,
and a replaying subscriber never holds the publisher back.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import asynccontextmanager
from typing import Final, Literal

import attrs
import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint_if_cancelled

from . import events as ev
from ._reduce import State, fold_tokens, initial_state, reduce, token_legal
from .errors import LogTrimmed, SessionClosed, SubscriberEvicted

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_LOG_MAX_EVENTS",
    "DEFAULT_STALL_TIMEOUT",
    "MAX_CAPACITY",
    "BusStatistics",
    "EventBus",
    "EventLog",
    "LogTrimmed",
    "SubscriberEvicted",
    "SubscriberStatistics",
    "Subscription",
]

DEFAULT_LOG_MAX_EVENTS: Final = 50_000
"""Events a session log keeps.  A long agent run is thousands to tens of thousands of
events (one per token); keeping 50k lets a client that reconnects after a long run
replay all of it, while capping a session's log near 10 MB (about 200 bytes an event).
Raise it with ``open_runtime(log_max_events=...)`` for longer sessions."""

DEFAULT_LOG_MAX_BYTES: Final = 16 * 1024 * 1024
"""Approximate bytes a session log keeps (see :func:`_size`).  Caps sessions whose events
are large (big tool results) before the count limit does."""

DEFAULT_CAPACITY: Final = 256
"""Events a subscriber buffers.  Large enough that a consumer that drains in batches
(one WebSocket frame per batch) rarely makes the publisher wait; small enough that a
stalled consumer pins little memory (events are shared with the log, not copied)."""

MAX_CAPACITY: Final = 65_536
"""The largest capacity a subscriber may ask for: the bound on what one subscriber can
pin, and on how far it may lag behind the log."""

DEFAULT_STALL_TIMEOUT: Final = 10.0
"""Seconds a lossless subscriber may hold the publisher with a full buffer and no
progress before it is evicted.  Long enough for a slow network hiccup, short enough that
one frozen browser tab cannot pause a run for long."""

FOLD_EVERY: Final = 256
"""Tokens the bus holds unfolded at most (see ``EventBus.state``): enough to fold a
burst in one state copy, few enough that the pending list stays small."""

_EVENT_OVERHEAD: Final = 200
"""Bytes counted per event on top of its text (object header, slots, the floats and
ints): the byte budget is an estimate, computed in O(1) on the publish path."""

Policy = Literal["block", "drop_oldest"]
POLICIES: Final = ("block", "drop_oldest")


def _size(event: ev.Event) -> int:
    """An estimate of what ``event`` costs to keep, without encoding it."""
    kind = type(event)
    if kind is ev.TokenStream or kind is ev.Reasoning:
        return _EVENT_OVERHEAD + len(event.text)  # type: ignore[attr-defined]
    if kind is ev.ToolCallDelta:
        return _EVENT_OVERHEAD + len(event.delta)  # type: ignore[attr-defined]
    return _EVENT_OVERHEAD + len(event.to_wire())


class EventLog:
    """The bounded, ordered log of one session's events.

    Bounded by a count and an approximate byte budget; the oldest events are trimmed
    first (their slots are cleared at once, so a trimmed event is freed then, not at
    the next compaction).  Index access is O(1) (a list with a moving head, compacted
    in amortized O(1)), so a replay cursor reads any position cheaply.
    """

    def __init__(
        self,
        max_events: int = DEFAULT_LOG_MAX_EVENTS,
        max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError(
                f"log bounds must be positive, got max_events={max_events}, max_bytes={max_bytes}"
            )
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: list[ev.Event | None] = []
        self._sizes: list[int] = []
        self._head = 0  # index of the oldest event still held
        self._first_seq = 1  # seq of self._events[self._head]
        self.last_seq = 0
        """The newest seq appended (0 before the first)."""
        self.bytes = 0

    def __len__(self) -> int:
        return self.last_seq - self._first_seq + 1

    @property
    def first_seq(self) -> int:
        """The oldest seq held (``last_seq + 1`` when empty)."""
        return self._first_seq

    def append(self, event: ev.Event) -> None:
        seq = self.last_seq + 1
        if event.seq != seq:
            raise ValueError(f"log append of seq {event.seq}, expected {seq}")
        size = _size(event)
        self._events.append(event)
        self._sizes.append(size)
        self.last_seq = seq
        self.bytes += size
        if seq - self._first_seq >= self.max_events or self.bytes > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        events, sizes = self._events, self._sizes
        head = self._head
        while self.last_seq - self._first_seq >= self.max_events or (
            self.bytes > self.max_bytes and self.last_seq > self._first_seq
        ):
            self.bytes -= sizes[head]
            events[head] = None
            head += 1
            self._first_seq += 1
        if head > 1024 and head * 2 > len(events):
            del events[:head]
            del sizes[:head]
            head = 0
        self._head = head

    def get(self, seq: int) -> ev.Event:
        """The event with ``seq``; raises :class:`LogTrimmed` if it is gone."""
        if seq < self._first_seq:
            raise LogTrimmed(seq - 1, self._first_seq)
        if seq > self.last_seq:
            raise IndexError(f"seq {seq} is not in the log yet (last seq: {self.last_seq})")
        return self._events[self._head + seq - self._first_seq]  # type: ignore[return-value]

    def replay(self, after: int = 0) -> list[ev.Event]:
        """Exactly the events with ``seq > after``, oldest first.

        Raises :class:`LogTrimmed` when some of them were trimmed away — never a silent
        gap.
        """
        if after < 0:
            raise ValueError(f"after must be >= 0, got {after}")
        if after + 1 < self._first_seq:
            raise LogTrimmed(after, self._first_seq)
        start = self._head + max(0, after + 1 - self._first_seq)
        return self._events[start:]  # type: ignore[return-value]

    def window(self, after: int, limit: int) -> list[ev.Event]:
        """At most ``limit`` events with ``seq > after``, oldest first (a replay in
        slices); raises :class:`LogTrimmed` like :meth:`replay`."""
        if after + 1 < self._first_seq:
            raise LogTrimmed(after, self._first_seq)
        start = self._head + after + 1 - self._first_seq
        return self._events[start : start + limit]  # type: ignore[return-value]

    def __iter__(self) -> Iterator[ev.Event]:
        return iter(self._events[self._head :])  # type: ignore[arg-type]


@attrs.frozen(slots=True)
class SubscriberStatistics:
    """One subscriber, as seen by ``EventBus.statistics()``."""

    id: int
    policy: str
    capacity: int
    buffered: int
    peak: int
    delivered: int
    dropped: int
    replaying: bool
    evicted: str | None
    tasks_waiting_receive: int


@attrs.frozen(slots=True)
class BusStatistics:
    """A session's bus: its log and its subscribers."""

    log_events: int
    log_bytes: int
    first_seq: int
    last_seq: int
    publishers_waiting: int
    subscribers: tuple[SubscriberStatistics, ...]


class Subscription(trio.abc.ReceiveChannel[ev.Event]):
    """A bounded channel of one subscriber's events, in ``seq`` order.

    Made by ``EventBus.subscribe``.  ``receive()`` blocks until an event is there;
    ``receive_nowait()`` raises ``trio.WouldBlock`` instead; ``receive_batch_nowait()``
    drains what is waiting (how a consumer batches when it is behind).  When the
    session closes, the buffered events are delivered, then ``trio.EndOfChannel``.
    """

    def __init__(
        self,
        bus: EventBus,
        sub_id: int,
        types: frozenset[str] | None,
        capacity: int,
        policy: Policy,
        stall_timeout: float,
        cursor: int | None,
    ) -> None:
        self._bus = bus
        self.id = sub_id
        self.types = types
        self.capacity = capacity
        self.policy: Policy = policy
        self.stall_timeout = stall_timeout
        self._buffer: deque[ev.Event] = deque()
        self._cursor = cursor  # last seq read from the log while replaying; None: live
        # receive() waiting for an event.  The lot itself says whether anyone waits
        # (as trio's channels ask theirs): a task cancelled while parked leaves it in
        # the same step, so no count beside it can go stale.
        self._receivers = ParkingLot()
        self._room = ParkingLot()  # publishers waiting for room in the buffer
        self._closed = False
        self._ended = False  # the bus closed: drain, then EndOfChannel
        self._evicted: str | None = None
        self._trimmed: LogTrimmed | None = None
        self.peak = 0
        self.delivered = 0
        self.dropped = 0
        self.last_seq = cursor if cursor is not None else bus.log.last_seq

    def matches(self, event: ev.Event) -> bool:
        return self.types is None or event.type in self.types

    @property
    def replaying(self) -> bool:
        return self._cursor is not None

    # ---- receiving ----------------------------------------------------------------

    def _replay_next(self) -> ev.Event | None:
        """The next matching event from the log, or None once caught up (then live)."""
        log = self._bus.log
        assert self._cursor is not None
        while self._cursor < log.last_seq:
            try:
                event = log.get(self._cursor + 1)
            except LogTrimmed:
                self._trimmed = LogTrimmed(self._cursor, log.first_seq)
                self._bus._detach(self)
                raise self._trimmed from None
            self._cursor += 1
            if self.matches(event):
                return event
        # Caught up: from now on the publisher fills our buffer.  Same synchronous step
        # as the last log read, so no event can fall between the two.
        self._cursor = None
        self._bus._go_live(self)
        return None

    def _replay_batch(self, limit: int) -> list[ev.Event]:
        """Up to ``limit`` matching events from the log in slices (a replay costs a few
        Python calls per slice, not per event); going live when caught up, as
        :meth:`_replay_next` does."""
        log = self._bus.log
        batch: list[ev.Event] = []
        while self._cursor is not None and len(batch) < limit:
            try:
                window = log.window(self._cursor, limit - len(batch))
            except LogTrimmed:
                self._trimmed = LogTrimmed(self._cursor, log.first_seq)
                self._bus._detach(self)
                if batch:
                    break  # delivered first; the next call raises
                raise self._trimmed from None
            if window:
                self._cursor = window[-1].seq
                types = self.types
                batch.extend(window if types is None else [e for e in window if e.type in types])
            if self._cursor == log.last_seq:
                self._cursor = None  # caught up: live from the next event (same step)
                self._bus._go_live(self)
        if batch:
            self.delivered += len(batch)
            self.last_seq = batch[-1].seq
        return batch

    def receive_nowait(self) -> ev.Event:
        if self._closed:
            raise trio.ClosedResourceError("subscription was closed")
        if self._trimmed is not None:
            raise self._trimmed
        if self._cursor is not None:
            event = self._replay_next()
            if event is not None:
                self.delivered += 1
                self.last_seq = event.seq
                return event
        if self._buffer:
            event = self._buffer.popleft()
            self.delivered += 1
            self.last_seq = event.seq
            if self._room:
                self._room.unpark_all()
            return event
        if self._evicted is not None:
            raise SubscriberEvicted(self._evicted, self.last_seq)
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def receive_batch_nowait(self, max_events: int | None = None) -> list[ev.Event]:
        """Every event waiting (at most ``max_events``), oldest first.

        Raises like ``receive_nowait`` when nothing is waiting.  A live subscriber's
        buffer is taken whole, in O(1) Python calls: this is how a consumer that is
        behind catches up cheaply.
        """
        limit = max_events if max_events is not None else MAX_CAPACITY
        if limit < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        if self._cursor is not None and not self._closed and self._trimmed is None:
            batch = self._replay_batch(limit)
            if batch:
                return batch
        buf = self._buffer
        if self._cursor is None and not self._closed and 0 < len(buf) <= limit:
            batch = list(buf)
            buf.clear()
            self.delivered += len(batch)
            self.last_seq = batch[-1].seq
            if self._room:
                self._room.unpark_all()
            return batch
        batch = [self.receive_nowait()]
        try:
            while len(batch) < limit:
                batch.append(self.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, SubscriberEvicted, LogTrimmed):
            pass  # raised again by the next call
        return batch

    def _wake_receivers(self) -> None:
        # A burst of publishes wakes a parked receiver once: the first unpark empties
        # the lot, and the rest find nobody there until it parks again.
        if self._receivers:
            self._receivers.unpark_all()

    async def receive(self) -> ev.Event:
        await checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self._receivers.park()
                parked = True  # that was our schedule point: none more on the way out
                continue
            if not parked:
                await cancel_shielded_checkpoint()
            return event

    async def receive_batch(self, max_events: int | None = None) -> list[ev.Event]:
        """Wait for at least one event, then return every event waiting."""
        await checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                batch = self.receive_batch_nowait(max_events)
            except trio.WouldBlock:
                await self._receivers.park()
                parked = True
                continue
            if not parked:
                await cancel_shielded_checkpoint()
            return batch

    # ---- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Detach from the bus.  Synchronous, idempotent, not a checkpoint."""
        if self._closed:
            return
        self._closed = True
        self._bus._detach(self, forget=True)
        self._buffer.clear()
        self._wake_receivers()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def _evict(self, reason: str) -> None:
        self._evicted = reason
        self._bus._detach(self)
        self._wake_receivers()

    def _end(self) -> None:
        self._ended = True
        self._wake_receivers()
        self._room.unpark_all()

    def statistics(self) -> SubscriberStatistics:
        return SubscriberStatistics(
            id=self.id,
            policy=self.policy,
            capacity=self.capacity,
            buffered=len(self._buffer),
            peak=self.peak,
            delivered=self.delivered,
            dropped=self.dropped,
            replaying=self._cursor is not None,
            evicted=self._evicted,
            tasks_waiting_receive=len(self._receivers),
        )


class EventBus:
    """One session's log, reduced state and subscribers.  See the module docstring."""

    def __init__(
        self,
        session: str,
        *,
        log: EventLog | None = None,
        state: State | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.log = log if log is not None else EventLog()
        self._state = state if state is not None else initial_state(session)
        # Tokens published since the state was last read, not yet folded into it.
        self._tokens: list[ev.TokenStream] = []
        self._clock = clock
        self._live: list[Subscription] = []  # every subscriber not replaying
        self._blocking: list[Subscription] = []  # the live ones with policy "block"
        self._subscribers: list[Subscription] = []
        self._ids = itertools.count(1)
        self._closed = False
        self._waiting = 0

    @property
    def state(self) -> State:
        """The reduced state: the fold of the log.

        Tokens are folded lazily: ``publish`` checks that a ``token_stream`` event is
        legal (the status and open step, which tokens never change), logs it and fans
        it out at once, and folds the run of tokens into the state with one copy
        (:func:`~trio_agent._reduce.fold_tokens`) when the state is next read — here,
        or by the next event of another type.  Observably the same as reducing each
        token as it comes; one state copy per burst instead of one per token.
        """
        if self._tokens:
            self._state = fold_tokens(self._state, self._tokens)
            self._tokens.clear()
        return self._state

    # ---- publishing ---------------------------------------------------------------

    def _full(self, event: ev.Event) -> Subscription | None:
        for sub in self._blocking:
            if len(sub._buffer) >= sub.capacity and sub.matches(event):
                return sub
        return None

    @property
    def next_seq(self) -> int:
        """The seq the next published event gets."""
        return self.log.last_seq + 1

    def publish_nowait(self, event: ev.Event) -> ev.Event:
        """Publish ``event`` now and return it stamped with session, seq and time.

        ``event`` is unstamped (``seq == 0``: the bus stamps a copy), or stamped by its
        producer with this session and :attr:`next_seq` in the same synchronous step
        (it is published as it is: the token hot path spares the copy).

        Raises ``trio.WouldBlock`` (publishing nothing) if a lossless subscriber is
        full, :class:`~trio_agent._reduce.ReduceError` (changing nothing) if the event
        is illegal in the current state, ``trio.ClosedResourceError`` after close.
        """
        if self._closed:
            raise SessionClosed(f"session {self.session!r} is closed")
        for sub in self._blocking:  # every lossless subscriber has room, or nothing
            if len(sub._buffer) >= sub.capacity and (sub.types is None or event.type in sub.types):
                raise trio.WouldBlock
        seq = self.log.last_seq + 1
        if event.seq == seq and event.session == self.session:
            stamped = event  # stamped by its producer in this same synchronous step
        elif event.seq == 0:
            stamped = _stamp(event, self.session, seq, self._clock())
        else:
            raise ValueError(
                f"can't publish {event.type!r} event with seq {event.seq} in session "
                f"{self.session!r}: the next seq is {seq} (publish unstamped events, seq 0)"
            )
        if type(stamped) is ev.TokenStream and (
            self._tokens or token_legal(self._state)
        ):  # legal: a token changes neither status nor step (see ``state``)
            tokens = self._tokens
            tokens.append(stamped)
            if len(tokens) >= FOLD_EVERY:
                self._state = fold_tokens(self._state, tokens)
                tokens.clear()
        else:
            self._state = reduce(self.state, stamped)
        self.log.append(stamped)
        for sub in self._live:
            if sub.types is not None and stamped.type not in sub.types:
                continue
            buf = sub._buffer
            n = len(buf)
            if n >= sub.capacity:  # only drop_oldest gets here
                buf.popleft()
                sub.dropped += 1
                n -= 1
            buf.append(stamped)
            if n >= sub.peak:
                sub.peak = n + 1
            if sub._receivers:  # (inlined ``_wake_receivers``)
                sub._receivers.unpark_all()
        return stamped

    async def publish(self, event: ev.Event) -> ev.Event:
        """Publish ``event``, first waiting for room in every lossless subscriber.

        A subscriber that stays full with no progress for its ``stall_timeout`` is
        evicted.  Cancelled while waiting: nothing was published.
        """
        await checkpoint_if_cancelled()
        waited = await self._wait_room(event)
        stamped = self.publish_nowait(event)
        if not waited:
            await cancel_shielded_checkpoint()
        return stamped

    async def wait_room(self, event: ev.Event) -> None:
        """Wait until ``publish_nowait(event)`` would not block (evicting stalled
        subscribers as ``publish`` does); publish nothing.  For a producer whose event
        depends on the state: decide, ``publish_nowait``, and on ``WouldBlock`` wait
        here and decide again — the decision and the publish stay one synchronous step.
        """
        await checkpoint_if_cancelled()
        if not await self._wait_room(event):
            await cancel_shielded_checkpoint()

    async def _wait_room(self, event: ev.Event) -> bool:
        """Wait for room for ``event``; whether it had to wait."""
        waited = False
        while (full := self._full(event)) is not None:
            waited = True
            self._waiting += 1
            try:
                with trio.move_on_after(full.stall_timeout) as scope:
                    await full._room.park()
            finally:
                self._waiting -= 1
            if scope.cancelled_caught and full in self._blocking:
                full._evict(
                    f"stalled: no progress for {full.stall_timeout:g}s "
                    f"with {len(full._buffer)} events buffered"
                )
        return waited

    # ---- subscribing --------------------------------------------------------------

    def open_subscription(
        self,
        *,
        types: Collection[str] | None = None,
        after: int | None = None,
        capacity: int = DEFAULT_CAPACITY,
        policy: Policy = "block",
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ) -> Subscription:
        """A new subscription; close it when done (or use :meth:`subscribe`)."""
        if self._closed:
            raise SessionClosed(f"session {self.session!r} is closed")
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {MAX_CAPACITY}, got {capacity}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be 'block' or 'drop_oldest', got {policy!r}")
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be positive, got {stall_timeout}")
        type_set = None if types is None else frozenset(types)
        if type_set is not None:
            unknown = sorted(type_set - ev.EVENT_TYPES.keys())
            if unknown:
                raise ValueError(f"unknown event types {unknown}")
        if after is not None:
            if after < 0:
                raise ValueError(f"after must be >= 0, got {after}")
            if after > self.log.last_seq:
                raise ValueError(
                    f"after={after} is beyond the newest seq {self.log.last_seq} "
                    f"of session {self.session!r}"
                )
            if after + 1 < self.log.first_seq:
                raise LogTrimmed(after, self.log.first_seq)
        cursor = after if after is not None and after < self.log.last_seq else None
        sub = Subscription(self, next(self._ids), type_set, capacity, policy, stall_timeout, cursor)
        if after is not None:
            sub.last_seq = after
        self._subscribers.append(sub)
        if cursor is None:
            self._go_live(sub)
        return sub

    @asynccontextmanager
    async def subscribe(
        self,
        *,
        types: Collection[str] | None = None,
        after: int | None = None,
        capacity: int = DEFAULT_CAPACITY,
        policy: Policy = "block",
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ) -> AsyncIterator[Subscription]:
        """``async with bus.subscribe(...) as events:`` — see :class:`Subscription`.

        With ``after``, the log after that seq comes first, then live events.  Without,
        only events published from now on.
        """
        sub = self.open_subscription(
            types=types,
            after=after,
            capacity=capacity,
            policy=policy,
            stall_timeout=stall_timeout,
        )
        try:
            yield sub
        finally:
            sub.close()

    def _go_live(self, sub: Subscription) -> None:
        if self._closed:
            sub._end()
            return
        self._live.append(sub)
        if sub.policy == "block":
            self._blocking.append(sub)

    def _detach(self, sub: Subscription, *, forget: bool = False) -> None:
        """Stop delivering to ``sub``; ``forget`` also drops it from the statistics
        (on close: an evicted subscriber stays listed until its owner closes it)."""
        for group in (self._live, self._blocking, self._subscribers if forget else []):
            if sub in group:
                group.remove(sub)
        sub._room.unpark_all()  # a publisher waiting on this subscriber re-checks

    # ---- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """End every subscription (after it drains).  Idempotent, not a checkpoint."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscribers):
            sub._end()
        self._live.clear()
        self._blocking.clear()

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            log_events=len(self.log),
            log_bytes=self.log.bytes,
            first_seq=self.log.first_seq,
            last_seq=self.log.last_seq,
            publishers_waiting=self._waiting,
            subscribers=tuple(s.statistics() for s in self._subscribers),
        )


_setattr = object.__setattr__


def _stamp(event: ev.Event, session: str, seq: int, ts: float) -> ev.Event:
    """A copy of ``event`` with the session id, ``seq`` and ``ts`` set.

    Built field by field rather than with ``attrs.evolve``: this is the token hot path,
    and the fields were validated when ``event`` was made (the three set here are the
    bus's own).
    """
    cls = type(event)
    new = object.__new__(cls)
    for name in cls._names:
        _setattr(new, name, getattr(event, name))
    _setattr(new, "session", session)
    _setattr(new, "seq", seq)
    _setattr(new, "ts", ts)
    return new
