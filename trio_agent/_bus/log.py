"""``EventLog``: the bounded, ordered log of one session's events.

Bounded by a count and an approximate byte budget (an O(1) estimate per event, see
:func:`event_size`); the oldest events are trimmed first.  Index access is O(1), so a
replay cursor reads any position cheaply, and a replay of events that were trimmed
raises :class:`~trio_agent.errors.LogTrimmed` — never a silent gap.

A ``token_stream`` — most of any log — is kept as a plain tuple ``(run, step, ts,
text)`` and built again (``TokenStream.new``, equal to the one published) when it is
read.  Such a tuple holds no object the garbage collector tracks, so the collector
stops tracking the tuple itself; an event object it would track, and visit on every
full collection for as long as the log keeps it.  With 50,000 events held that visiting
cost more than the rest of a publish (see the ``bus`` benchmark); a server holding many
sessions' logs would pay it on every full collection, for every event it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from .._core import events as ev
from ..errors import LogTrimmed

__all__ = [
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_LOG_MAX_EVENTS",
    "TRIM_SLACK",
    "EventLog",
    "event_size",
]

DEFAULT_LOG_MAX_EVENTS: Final = 50_000
"""Events a session log keeps.  A long agent run is thousands to tens of thousands of
events (one per token); keeping 50k lets a client that reconnects after a long run
replay all of it, while capping a session's log near 10 MB (about 200 bytes an event).
Raise it with ``open_runtime(log_max_events=...)`` for longer sessions."""

DEFAULT_LOG_MAX_BYTES: Final = 16 * 1024 * 1024
"""Approximate bytes a session log keeps (see :func:`event_size`).  Caps sessions whose events
are large (big tool results) before the count limit does."""

TRIM_SLACK: Final = 64
"""The count bound is kept in batches: a log past ``max_events`` by ``max_events // 64``
events is trimmed back to ``max_events`` at once, so that a long run (one token per
event) pays for trimming every few hundred events instead of at every one.  The log
holds at most ``max_events + max_events // 64`` (a 50,000-event log: 50,781); a small
log is trimmed exactly."""

_EVENT_OVERHEAD: Final = 200
"""Bytes counted per event on top of its text (object header, slots, the floats and
ints): the byte budget is an estimate, computed in O(1) on the publish path."""


_TOKEN: Final = ev.TokenStream
_new_token: Final = ev.TokenStream.new

_Kept = ev.Event | tuple[int, int, float, str] | None
"""What the log holds for an event: the event, a token's tuple, or (trimmed) None."""


def event_size(event: ev.Event) -> int:
    """An estimate of what ``event`` costs to keep, without encoding it: its streamed
    text, or its wire form, plus :data:`_EVENT_OVERHEAD`."""
    kind = type(event)
    if kind is _TOKEN or kind is ev.Reasoning:
        return _EVENT_OVERHEAD + len(event.text)  # type: ignore[attr-defined]
    if kind is ev.ToolCallDelta:
        return _EVENT_OVERHEAD + len(event.delta)  # type: ignore[attr-defined]
    return _EVENT_OVERHEAD + len(event.to_wire())


class EventLog:
    """The bounded, ordered log of one session's events.

    Bounded by a count (kept in batches, see :data:`TRIM_SLACK`) and an approximate
    byte budget; the oldest events are trimmed first (their slots are cleared at once,
    so a trimmed event is freed then, not at the next compaction).  Index access is
    O(1) (a list with a moving head, compacted in amortized O(1)), so a replay cursor
    reads any position cheaply.
    """

    __slots__ = (
        "_events",
        "_first_seq",
        "_head",
        "_session",
        "_sizes",
        "_trim_at",
        "bytes",
        "last_seq",
        "max_bytes",
        "max_events",
    )

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
        self._trim_at = max_events + max_events // TRIM_SLACK  # (seq - first_seq) bound
        self._events: list[_Kept] = []
        self._session = ""  # (every event of a log has its session: a token's is not kept)
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
        size = event_size(event)
        if type(event) is _TOKEN:
            if not self._session:
                self._session = event.session
            self._events.append((event.run, event.step, event.ts, event.text))
        else:
            self._events.append(event)
        self._sizes.append(size)
        self.last_seq = seq
        self.bytes += size
        if seq - self._first_seq >= self._trim_at or self.bytes > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        events, sizes = self._events, self._sizes
        head = self._head
        # The count bound first, in one slice (the common case: a long run of tokens).
        over = self.last_seq - self._first_seq + 1 - self.max_events
        if over > 0:
            self.bytes -= sum(sizes[head : head + over])
            events[head : head + over] = [None] * over
            head += over
            self._first_seq += over
        # Then the byte bound, oldest first, keeping at least the newest event.
        while self.bytes > self.max_bytes and self.last_seq > self._first_seq:
            self.bytes -= sizes[head]
            events[head] = None
            head += 1
            self._first_seq += 1
        if head > 1024 and head * 2 > len(events):
            del events[:head]
            del sizes[:head]
            head = 0
        self._head = head

    def _event(self, kept: _Kept, seq: int) -> ev.Event:
        """The event ``kept`` at ``seq`` stands for (see the module docstring)."""
        if type(kept) is tuple:
            run, step, ts, text = kept
            token: ev.Event = _new_token(self._session, run, step, seq, ts, text)
            return token
        assert kept is not None
        return kept  # type: ignore[return-value]

    def _events_from(self, start: int, stop: int | None = None) -> list[ev.Event]:
        """The events held at indexes ``start`` to ``stop``, oldest first."""
        seq = self._first_seq + start - self._head
        event = self._event
        return [event(k, seq + i) for i, k in enumerate(self._events[start:stop])]

    def get(self, seq: int) -> ev.Event:
        """The event with ``seq``; raises :class:`LogTrimmed` if it is gone."""
        if seq < self._first_seq:
            raise LogTrimmed(seq - 1, self._first_seq)
        if seq > self.last_seq:
            raise IndexError(f"seq {seq} is not in the log yet (last seq: {self.last_seq})")
        return self._event(self._events[self._head + seq - self._first_seq], seq)

    def replay(self, after: int = 0) -> list[ev.Event]:
        """Exactly the events with ``seq > after``, oldest first.

        Raises :class:`LogTrimmed` when some of them were trimmed away — never a silent
        gap.
        """
        if after < 0:
            raise ValueError(f"after must be >= 0, got {after}")
        if after + 1 < self._first_seq:
            raise LogTrimmed(after, self._first_seq)
        return self._events_from(self._head + max(0, after + 1 - self._first_seq))

    def window(self, after: int, limit: int) -> list[ev.Event]:
        """At most ``limit`` events with ``seq > after``, oldest first (a replay in
        slices); raises :class:`LogTrimmed` like :meth:`replay`."""
        if after + 1 < self._first_seq:
            raise LogTrimmed(after, self._first_seq)
        start = self._head + after + 1 - self._first_seq
        return self._events_from(start, start + limit)

    def __iter__(self) -> Iterator[ev.Event]:
        return iter(self._events_from(self._head))
