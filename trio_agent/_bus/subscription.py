"""``Subscription``: one subscriber's bounded channel of events, in ``seq`` order.

Each subscription has a policy:

- ``block`` (lossless): when its buffer is full, the publisher waits for room before it
  publishes anything.  A subscriber that makes no progress for ``stall_timeout`` is
  evicted: it drains what it holds, then ``receive`` raises
  :class:`~trio_agent.errors.SubscriberEvicted` with the reason and the last seq it
  got, so it can re-attach with ``after=`` and replay.
- ``drop_oldest`` (lossy): never blocks the publisher; a full buffer drops its oldest
  event and counts it.

What the bus and a subscription share is an :class:`Inbox`: the buffer, who waits on
it, and its counts.  The bus writes into it, the subscription reads from it.  Who waits
to receive is recorded in one place, ``Inbox.receive_tasks``, as trio's memory channels
record theirs: a waiting task is put there when it parks and taken out by whoever wakes
it — the publisher, or trio's abort when its wait is cancelled, in the same scheduling
step — so no count beside it can go stale.

Replay-then-live has no seam: a subscription made with ``after=`` reads the log from a
cursor and goes live — the bus starts filling its inbox — in the same synchronous step
in which the cursor reaches the newest event.  Nothing is delivered twice or missed, and
a replaying subscriber never holds the publisher back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final, Literal

import attrs
import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from .._core import events as ev
from ..errors import LogTrimmed, SubscriberEvicted
from .log import EventLog

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_STALL_TIMEOUT",
    "MAX_CAPACITY",
    "POLICIES",
    "REPLAY_BATCH",
    "Inbox",
    "Policy",
    "SubscriberStatistics",
    "Subscription",
]

DEFAULT_CAPACITY: Final = 256
"""Events a subscriber buffers.  Large enough that a consumer that drains in batches
(one WebSocket frame per batch) rarely makes the publisher wait; small enough that a
stalled consumer pins little memory (an event is one object, shared by every
subscriber, not copied)."""

MAX_CAPACITY: Final = 65_536
"""The largest capacity a subscriber may ask for: the bound on what one subscriber can
pin, and on how far it may lag behind the log."""

DEFAULT_STALL_TIMEOUT: Final = 10.0
"""Seconds a lossless subscriber may hold the publisher with a full buffer and no
progress before it is evicted.  Long enough for a slow network hiccup, short enough that
one frozen browser tab cannot pause a run for long."""

REPLAY_BATCH: Final = 4096
"""Events a replaying subscription takes from the log per ``receive_batch``: a token is
built again from the log's compact form as it is read (about a microsecond), so one
slice holds the scheduler for a few milliseconds at most however long the log; the
next receive takes the next slice."""

Policy = Literal["block", "drop_oldest"]
POLICIES: Final = ("block", "drop_oldest")


class Inbox:
    """What the bus and one subscription share (see the module docstring).

    The bus appends to ``buffer`` (at most ``capacity``; a ``drop_oldest`` inbox drops
    its oldest first and counts it) and wakes ``receive_tasks``; the subscription takes
    from ``buffer`` and wakes ``room`` (publishers waiting for it).  ``types`` is the
    filter (None: every event).  ``peak`` is the most it held: noted where it shrinks
    (a buffer is at its longest just before a receive takes from it), so the publish
    path does not track it.
    """

    __slots__ = (
        "buffer",
        "capacity",
        "dropped",
        "ended",
        "evicted",
        "peak",
        "policy",
        "receive_tasks",
        "room",
        "types",
    )

    def __init__(self, types: frozenset[str] | None, capacity: int, policy: Policy) -> None:
        self.buffer: deque[ev.Event] = deque()
        self.capacity = capacity
        self.types = types
        self.policy: Policy = policy
        self.receive_tasks: dict[Task, None] = {}  # receive() waiting for an event
        self.room = ParkingLot()  # publishers waiting for room in the buffer
        self.peak = 0
        self.dropped = 0
        self.ended = False  # the bus closed: drain, then EndOfChannel
        self.evicted: str | None = None  # why the bus evicted it

    async def wait(self) -> None:
        """Park the calling task until :meth:`wake_receivers` (or its cancellation)."""
        task = current_task()
        tasks = self.receive_tasks
        tasks[task] = None

        def abort(_: object) -> Abort:
            del tasks[task]  # cancelled while waiting: gone in the same step
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def wake_receivers(self) -> None:
        """Wake every waiting receiver.  A burst of publishes wakes one once: the first
        wake-up empties ``receive_tasks``, and the rest find nobody there until it
        waits again (the bus checks ``receive_tasks`` before calling this)."""
        tasks = self.receive_tasks
        for task in tasks:
            reschedule(task)
        tasks.clear()

    def end(self) -> None:
        """The bus closed: what is buffered is delivered, then ``EndOfChannel``."""
        self.ended = True
        self.wake_receivers()
        self.room.unpark_all()

    def evict(self, reason: str) -> None:
        """The bus gave up on this subscriber (it stalled): it drains, then is told why."""
        self.evicted = reason
        self.wake_receivers()


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


class Subscription(trio.abc.ReceiveChannel[ev.Event]):
    """A bounded channel of one subscriber's events, in ``seq`` order.

    Made by ``EventBus.open_subscription`` (or ``subscribe``).  ``receive()`` blocks
    until an event is there; ``receive_nowait()`` raises ``trio.WouldBlock`` instead;
    ``receive_batch_nowait()`` drains what is waiting (how a consumer batches when it is
    behind).  When the session closes, the buffered events are delivered, then
    ``trio.EndOfChannel``.

    ``go_live(inbox)`` and ``detach(inbox, forget)`` are the bus's: called when the
    replay catches up, and when the subscription is trimmed out or closed.
    """

    def __init__(
        self,
        sub_id: int,
        log: EventLog,
        inbox: Inbox,
        stall_timeout: float,
        cursor: int | None,
        last_seq: int,
        go_live: Callable[[Inbox], None],
        detach: Callable[[Inbox, bool], None],
    ) -> None:
        self.id = sub_id
        self.inbox = inbox
        self.stall_timeout = stall_timeout
        self._log = log
        self._cursor = cursor  # last seq read from the log while replaying; None: live
        self._go_live = go_live
        self._detach = detach
        self._closed = False
        self._trimmed: LogTrimmed | None = None
        self.delivered = 0
        self.last_seq = last_seq
        """The seq of the last event received (or the cursor it started from)."""

    @property
    def types(self) -> frozenset[str] | None:
        return self.inbox.types

    @property
    def capacity(self) -> int:
        return self.inbox.capacity

    @property
    def policy(self) -> Policy:
        return self.inbox.policy

    @property
    def replaying(self) -> bool:
        return self._cursor is not None

    # ---- receiving ----------------------------------------------------------------

    def _caught_up(self) -> None:
        # From now on the bus fills our inbox.  Same synchronous step as the last log
        # read, so no event can fall between the two.
        self._cursor = None
        self._go_live(self.inbox)

    def _trim(self, cursor: int) -> LogTrimmed:
        self._trimmed = LogTrimmed(cursor, self._log.first_seq)
        self._detach(self.inbox, False)
        return self._trimmed

    def _replay_next(self) -> ev.Event | None:
        """The next matching event from the log, or None once caught up (then live)."""
        log, types = self._log, self.inbox.types
        assert self._cursor is not None
        while self._cursor < log.last_seq:
            try:
                event = log.get(self._cursor + 1)
            except LogTrimmed:
                raise self._trim(self._cursor) from None
            self._cursor += 1
            if types is None or event.type in types:
                return event
        self._caught_up()
        return None

    def _replay_batch(self, limit: int) -> list[ev.Event]:
        """Up to ``limit`` matching events from the log in slices (a replay costs a few
        Python calls per slice, not per event); going live when caught up."""
        log, types = self._log, self.inbox.types
        batch: list[ev.Event] = []
        while self._cursor is not None and len(batch) < limit:
            try:
                window = log.window(self._cursor, limit - len(batch))
            except LogTrimmed:
                trimmed = self._trim(self._cursor)
                if batch:
                    break  # delivered first; the next call raises
                raise trimmed from None
            if window:
                self._cursor = window[-1].seq
                batch.extend(window if types is None else [e for e in window if e.type in types])
            if self._cursor == log.last_seq:
                self._caught_up()
        if batch:
            self.delivered += len(batch)
            self.last_seq = batch[-1].seq
        return batch

    def _nothing(self) -> BaseException:
        """What receiving raises when nothing is buffered."""
        inbox = self.inbox
        if inbox.evicted is not None:
            return SubscriberEvicted(inbox.evicted, self.last_seq)
        if inbox.ended:
            return trio.EndOfChannel()
        return trio.WouldBlock()

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
        inbox = self.inbox
        buf = inbox.buffer
        if buf:
            if len(buf) > inbox.peak:
                inbox.peak = len(buf)
            event = buf.popleft()
            self.delivered += 1
            self.last_seq = event.seq
            if inbox.room:
                inbox.room.unpark_all()
            return event
        raise self._nothing()

    def receive_batch_nowait(self, max_events: int | None = None) -> list[ev.Event]:
        """Every event waiting (at most ``max_events``), oldest first.

        Raises like ``receive_nowait`` when nothing is waiting.  A live subscriber's
        buffer is taken whole, in O(1) Python calls: this is how a consumer that is
        behind catches up cheaply.  A replaying one takes at most
        :data:`REPLAY_BATCH` from the log per call.
        """
        limit = max_events if max_events is not None else MAX_CAPACITY
        if limit < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        if self._cursor is not None and not self._closed and self._trimmed is None:
            batch = self._replay_batch(min(limit, REPLAY_BATCH))
            if batch:
                return batch
        inbox = self.inbox
        buf = inbox.buffer
        if self._cursor is None and not self._closed and 0 < len(buf) <= limit:
            if len(buf) > inbox.peak:
                inbox.peak = len(buf)
            batch = list(buf)
            buf.clear()
            self.delivered += len(batch)
            self.last_seq = batch[-1].seq
            if inbox.room:
                inbox.room.unpark_all()
            return batch
        batch = [self.receive_nowait()]
        try:
            while len(batch) < limit:
                batch.append(self.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, SubscriberEvicted, LogTrimmed):
            pass  # raised again by the next call
        return batch

    async def receive(self) -> ev.Event:
        await checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self.inbox.wait()
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
                await self.inbox.wait()
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
        self._detach(self.inbox, True)
        inbox = self.inbox
        if len(inbox.buffer) > inbox.peak:
            inbox.peak = len(inbox.buffer)
        inbox.buffer.clear()
        self.inbox.wake_receivers()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> SubscriberStatistics:
        inbox = self.inbox
        return SubscriberStatistics(
            id=self.id,
            policy=inbox.policy,
            capacity=inbox.capacity,
            buffered=len(inbox.buffer),
            peak=max(inbox.peak, len(inbox.buffer)),
            delivered=self.delivered,
            dropped=inbox.dropped,
            replaying=self._cursor is not None,
            evicted=inbox.evicted,
            tasks_waiting_receive=len(inbox.receive_tasks),
        )
