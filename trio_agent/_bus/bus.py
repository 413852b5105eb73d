"""``EventBus``: one session's single writer — seq, log, reduced state, fan-out.

Publishing is the single point where a session's facts become events.  One publish,
synchronously and with no checkpoint in between, so that ``seq`` is gapless however
many tasks publish:

1. every lossless subscriber the event is for has room, or nothing happens
   (``trio.WouldBlock``; ``publish`` waits for room first);
2. the event is stamped with the session, the next ``seq`` and the time;
3. it is reduced into the state (an illegal event raises and changes nothing);
4. it is appended to the bounded :class:`~trio_agent._bus.log.EventLog`;
5. it goes into every live subscriber's inbox, waking a receiver that waits.

Three ways in: ``publish_new(cls, **fields)`` builds the event already stamped (the agent
loop's way: one construction per event; ``publish_token_nowait(run, step, text)`` is
the same for one model token, the hot path); ``publish(event)`` stamps a copy of an
unstamped event (``seq == 0``); an event already stamped for this session with the next
``seq`` is published as it is (a replica copying another process's log).  Each has a
``_nowait`` twin.

Why not ``trio.open_memory_channel``: a lossless fan-out must wait for room in *every*
channel before committing an event (trio's channels can only wait by sending), a
``drop_oldest`` channel must drop from the sending side, and an evicted subscriber must
learn why.  The inboxes are plain bounded deques with ``ParkingLot`` wake-ups — the same
design as trio's memory channels, with those three additions.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from .._core import events as ev
from .._core.reduce import fold_tokens, reduce, token_legal
from .._core.state import State, initial_state
from ..errors import LogTrimmed, SessionClosed
from .log import EventLog
from .subscription import (
    DEFAULT_CAPACITY,
    DEFAULT_STALL_TIMEOUT,
    MAX_CAPACITY,
    POLICIES,
    Inbox,
    Policy,
    SubscriberStatistics,
    Subscription,
)

__all__ = ["FOLD_EVERY", "BusStatistics", "EventBus"]

FOLD_EVERY: Final = 256
"""Tokens the bus holds unfolded at most (see ``EventBus.state``): enough to fold a
burst in one state copy, few enough that the pending list stays small."""

_TokenStream: Final = ev.TokenStream
_new_token: Final = ev.TokenStream.new


@attrs.frozen(slots=True)
class BusStatistics:
    """A session's bus: its log and its subscribers."""

    log_events: int
    log_bytes: int
    first_seq: int
    last_seq: int
    publishers_waiting: int
    subscribers: tuple[SubscriberStatistics, ...]
    dropped: int = 0
    """Events dropped by ``drop_oldest`` subscribers since the bus began (closed ones too)."""
    evictions: int = 0
    """Lossless subscribers evicted since the bus began."""


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
        self._live: list[Inbox] = []  # every subscriber not replaying
        self._blocking: list[Inbox] = []  # the live ones with policy "block"
        # Whether one of those may be full.  Only the fan-out fills an inbox (a new one
        # starts empty, a replaying one goes live empty), so it is set there when an
        # append fills a lossless inbox, and cleared by a room check that finds none
        # full: while it is False, every lossless subscriber has room, unchecked.
        self._maybe_full = False
        self._subscribers: dict[Inbox, Subscription] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._waiting = 0
        self._dropped = 0  # (for statistics: the lifetime totals)
        self._evictions = 0

    @property
    def state(self) -> State:
        """The reduced state: the fold of the log.

        Tokens are folded lazily: publishing a ``token_stream`` event checks that it is
        legal (the status and open step, which tokens never change), logs it and fans
        it out at once, and folds the run of tokens into the state with one copy
        (:func:`~trio_agent._core.reduce.fold_tokens`) when the state is next read —
        here, or by the next event of another type.  Observably the same as reducing
        each token as it comes; one state copy per burst instead of one per token.
        """
        if self._tokens:
            self._state = fold_tokens(self._state, self._tokens)
            self._tokens.clear()
        return self._state

    @property
    def next_seq(self) -> int:
        """The seq the next published event gets."""
        return self.log.last_seq + 1

    # ---- publishing ---------------------------------------------------------------

    def _room_for(self, kind: str) -> Inbox | None:
        """A lossless live inbox that ``kind`` is for and that is full, or None (and
        none full at all: ``_maybe_full`` is cleared)."""
        full = False
        for inbox in self._blocking:
            if len(inbox.buffer) >= inbox.capacity:
                if inbox.types is None or kind in inbox.types:
                    return inbox
                full = True
        self._maybe_full = full
        return None

    def _commit(self, event: ev.Event) -> None:
        """Steps 1 and 3–5 of a publish (see the module docstring) for a stamped event:
        ``trio.WouldBlock`` (nothing published) if a lossless subscriber it is for is
        full, else reduce, log and fan out."""
        kind = event.type
        if self._maybe_full and self._room_for(kind) is not None:
            raise trio.WouldBlock  # every lossless subscriber has room, or nothing
        if type(event) is _TokenStream and (self._tokens or token_legal(self._state)):
            # Legal: a token changes neither status nor step (see ``state``).
            tokens = self._tokens
            tokens.append(event)
            if len(tokens) >= FOLD_EVERY:
                self._state = fold_tokens(self._state, tokens)
                tokens.clear()
        else:
            self._state = reduce(self.state, event)
        self.log.append(event)
        for inbox in self._live:
            if inbox.types is not None and kind not in inbox.types:
                continue
            buf = inbox.buffer
            if len(buf) >= inbox.capacity:  # only drop_oldest gets here
                buf.popleft()
                inbox.peak = inbox.capacity
                inbox.dropped += 1
                self._dropped += 1
            buf.append(event)
            if len(buf) == inbox.capacity and inbox.policy == "block":
                self._maybe_full = True
            if inbox.receive_tasks:
                inbox.wake_receivers()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosed(f"session {self.session!r} is closed")

    def publish_new_nowait(self, cls: type[ev.Event], /, **fields: Any) -> ev.Event:
        """Build an event of ``cls`` from ``fields``, stamped with this session, the next
        seq and the time, and publish it now; return it.

        Raises ``trio.WouldBlock`` (publishing nothing) if a lossless subscriber it is
        for is full, ``ProtocolError`` for bad fields and
        ``ReduceError`` for an event illegal in the state (publishing nothing),
        ``SessionClosed`` after close.
        """
        self._check_open()
        event = cls(session=self.session, seq=self.log.last_seq + 1, ts=self._clock(), **fields)
        self._commit(event)
        return event

    def publish_token_nowait(self, run: int, step: int, text: str) -> ev.TokenStream:
        """``publish_new_nowait(TokenStream, run=run, step=step, text=text)``, for the hot
        path: one model token, one call."""
        if self._closed:
            self._check_open()
        event: ev.TokenStream = _new_token(
            self.session, run, step, self.log.last_seq + 1, self._clock(), text
        )
        self._commit(event)
        return event

    def publish_nowait(self, event: ev.Event) -> ev.Event:
        """Publish ``event`` now and return it stamped.

        ``event`` is unstamped (``seq == 0``: the bus stamps a copy), or stamped for this
        session with :attr:`next_seq` (published as it is: a replica copying another
        process's log).  Raises like :meth:`publish_new_nowait`, and ``ValueError`` for
        an event stamped otherwise.
        """
        self._check_open()
        seq = self.log.last_seq + 1
        if event.seq == 0:
            event = event.stamped(self.session, seq, self._clock())
        elif event.seq != seq or event.session != self.session:
            raise ValueError(
                f"can't publish {event.type!r} event with seq {event.seq} of session "
                f"{event.session!r} in session {self.session!r}: the next seq is {seq} "
                "(publish unstamped events, seq 0)"
            )
        self._commit(event)
        return event

    async def publish_new(self, cls: type[ev.Event], /, **fields: Any) -> ev.Event:
        """:meth:`publish_new_nowait`, first waiting for room in every lossless
        subscriber (see :meth:`wait_room`).  Cancelled while waiting: nothing was
        published."""
        await checkpoint_if_cancelled()
        waited = await self._wait_room(cls.type)
        event = self.publish_new_nowait(cls, **fields)
        if not waited:
            await cancel_shielded_checkpoint()
        return event

    async def publish(self, event: ev.Event) -> ev.Event:
        """:meth:`publish_nowait`, first waiting for room in every lossless subscriber
        (see :meth:`wait_room`).  Cancelled while waiting: nothing was published."""
        await checkpoint_if_cancelled()
        waited = await self._wait_room(event.type)
        stamped = self.publish_nowait(event)
        if not waited:
            await cancel_shielded_checkpoint()
        return stamped

    async def wait_room(self, kind: str) -> None:
        """Wait until every lossless subscriber that an event of type ``kind`` is for
        has room, evicting one that stays full with no progress for its
        ``stall_timeout``; publish nothing.  For a producer whose event depends on the
        state: decide, ``publish_nowait``, and on ``WouldBlock`` wait here and decide
        again — the decision and the publish stay one synchronous step."""
        await checkpoint_if_cancelled()
        if not await self._wait_room(kind):
            await cancel_shielded_checkpoint()

    async def _wait_room(self, kind: str) -> bool:
        """Wait for room for an event of ``kind``; whether it had to wait."""
        waited = False
        while (full := self._room_for(kind)) is not None:
            waited = True
            sub = self._subscribers[full]
            self._waiting += 1
            try:
                with trio.move_on_after(sub.stall_timeout) as scope:
                    await full.room.park()
            finally:
                self._waiting -= 1
            if scope.cancelled_caught and full in self._blocking:
                self._evictions += 1
                self._detach(full, False)
                full.evict(
                    f"stalled: no progress for {sub.stall_timeout:g}s "
                    f"with {len(full.buffer)} events buffered"
                )
        return waited

    async def wait_published(self, seq: int) -> None:
        """Return once the log holds ``seq`` (at once, with no schedule point, if it
        does).  Raises :class:`~trio_agent.errors.SessionClosed` if the bus closes
        first.  (A command on a session whose visible bus lags its working one waits
        here until its events are visible.)"""
        if self.log.last_seq >= seq:
            return
        sub = self.open_subscription(capacity=1, policy="drop_oldest")
        try:
            while self.log.last_seq < seq:
                try:
                    await sub.receive()
                except trio.EndOfChannel:
                    raise SessionClosed(
                        f"session {self.session!r} closed before seq {seq} was published"
                    ) from None
        finally:
            sub.close()

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
        """A new subscription; close it when done (or use :meth:`subscribe`).

        With ``after``, the log after that seq comes first, then live events.  Without,
        only events published from now on.  A closed bus refuses a subscription
        without ``after`` (``SessionClosed``); with it, the log is replayed and then the
        subscription ends (a subscriber evicted as the session closed reads the rest)."""
        if after is None:
            self._check_open()
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
        log = self.log
        if after is not None:
            if after < 0:
                raise ValueError(f"after must be >= 0, got {after}")
            if after > log.last_seq:
                raise ValueError(
                    f"after={after} is beyond the newest seq {log.last_seq} "
                    f"of session {self.session!r}"
                )
            if after + 1 < log.first_seq:
                raise LogTrimmed(after, log.first_seq)
        cursor = after if after is not None and after < log.last_seq else None
        inbox = Inbox(type_set, capacity, policy)
        sub = Subscription(
            next(self._ids),
            log,
            inbox,
            stall_timeout,
            cursor,
            after if after is not None else log.last_seq,
            self._go_live,
            self._detach,
        )
        self._subscribers[inbox] = sub
        if cursor is None:
            self._go_live(inbox)
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
        """``async with bus.subscribe(...) as events:`` — see :meth:`open_subscription`."""
        sub = self.open_subscription(
            types=types, after=after, capacity=capacity, policy=policy, stall_timeout=stall_timeout
        )
        try:
            yield sub
        finally:
            sub.close()

    def _go_live(self, inbox: Inbox) -> None:
        if self._closed:
            inbox.end()
            return
        self._live.append(inbox)
        if inbox.policy == "block":
            self._blocking.append(inbox)

    def _detach(self, inbox: Inbox, forget: bool) -> None:
        """Stop delivering to ``inbox``; ``forget`` also drops it from the statistics
        (on close: an evicted subscriber stays listed until its owner closes it)."""
        for group in (self._live, self._blocking):
            if inbox in group:
                group.remove(inbox)
        if forget:
            self._subscribers.pop(inbox, None)
        inbox.room.unpark_all()  # a publisher waiting on this subscriber re-checks

    # ---- lifecycle ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End every subscription (after it drains).  Idempotent, not a checkpoint."""
        if self._closed:
            return
        self._closed = True
        for inbox in list(self._subscribers):
            inbox.end()
        self._live.clear()
        self._blocking.clear()

    def statistics(self) -> BusStatistics:
        log = self.log
        return BusStatistics(
            log_events=len(log),
            log_bytes=log.bytes,
            first_seq=log.first_seq,
            last_seq=log.last_seq,
            publishers_waiting=self._waiting,
            subscribers=tuple(s.statistics() for s in self._subscribers.values()),
            dropped=self._dropped,
            evictions=self._evictions,
        )
