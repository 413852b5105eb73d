"""One client of one session, whatever its framing: what a WebSocket client and an SSE
stream share, so that there is one mechanism and two framings, not two copies.

- :class:`Client` — a client's life: the *pump* (the UI consumer of DESIGN §1: one
  bounded subscription, drained in batches, merged, one frame per batch — and what it
  does when it is evicted, the log is trimmed, the session ends or the server drains;
  a heartbeat when it has been silent, for the framings that want one), the end decided
  for it (a close code and reason, or the peer gone), the flush of what is left.  A
  transport subclasses it with :meth:`Client.send_frame` (its framing: how a batch's
  wire dicts go out) and :meth:`Client.run` (its tasks: the pump and, for a WebSocket,
  the command reader; for an event stream, the watch for the peer leaving), and may
  override :meth:`Client.send_heartbeat`, :meth:`Client.resume_hint` and
  :meth:`Client.cannot_replay`.  :meth:`AgentServer.attach
  <trio_agent.transports.AgentServer.attach>` admits any ``Client``.
- :class:`Counters` — what the clients of one server sent, for its ``statistics()``.
- :func:`snapshot_of` — the ``state`` event a client without ``after`` gets first.
- :func:`apply_command` — a client's command text parsed and applied (:func:`apply`: a
  command already parsed), and the error code and message the client gets when it is
  refused.
"""

from __future__ import annotations

import abc
import math
import time
from typing import Any, ClassVar, Final

import attrs
import trio

from .._bus import Subscription
from .._core import events as ev
from .._core import wire
from .._core.commands import Command
from .._core.histogram import Histogram
from .._runtime import Applied, Session
from ..errors import CommandError, LogTrimmed, SessionLogError, SessionStateError, SubscriberEvicted
from .limits import CLOSE_EVICTED, CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER, ServerLimits

__all__ = [
    "SEND_LATENCY_BUCKETS",
    "Client",
    "CommandOutcome",
    "Counters",
    "apply",
    "apply_command",
    "snapshot_of",
]

SEND_LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds, the upper bounds of the publish-to-send latency buckets: from a frame sent
at once (a tenth of a millisecond) to one held back by a slow client (the default
``send_timeout`` is 30 s, the ``stall_timeout`` 10 s)."""


@attrs.define
class Counters:
    """What the clients of one server sent (every transport's clients add to it)."""

    frames: int = 0
    """Frames of events (a ``state`` snapshot or a batch), not of errors."""
    events: int = 0
    """Events in those batches, counting each merged one."""
    merged: int = 0
    """Events folded into the one before them (see ``wire.merge_events``)."""
    errors: int = 0
    """Client-only ``error`` events."""
    refused: dict[str, int] = attrs.field(factory=dict)
    """Client commands refused, by the ``error`` code the client got."""
    send_latency: Histogram = attrs.field(factory=lambda: Histogram(SEND_LATENCY_BUCKETS))
    """Per live frame: seconds from the publish of its oldest event to the frame sent."""

    def refuse(self, code: str) -> None:
        """Count a client command refused with ``code``."""
        self.refused[code] = self.refused.get(code, 0) + 1


def snapshot_of(session: Session) -> ev.StateSnapshot:
    """The ``state`` event of ``session`` now (the state subscribers see).  Taken in
    the same synchronous step as the subscription is opened, its seq is exactly the seq
    after which the subscription's live events start."""
    state = session.state
    return ev.StateSnapshot(
        session=session.id,
        run=state.run,
        step=state.step,
        seq=state.seq,
        ts=time.time(),
        state=state.to_dict(),
    )


@attrs.frozen(slots=True)
class CommandOutcome:
    """What became of one client command: ``applied`` (with what applied it), or
    refused with the ``error`` ``code`` and ``message`` the client gets."""

    applied: Applied | None = None
    command_id: str | None = None
    code: str = ""
    message: str = ""

    def reply(self) -> dict[str, Any] | None:
        """What the client that sent it gets: an ``error`` (refused), an ``ack`` (its id
        was applied before: not applied again), or nothing (its events say it all)."""
        if self.applied is None:
            return wire.client_error(self.code, self.message).to_dict()
        if self.applied.duplicate and self.command_id is not None:
            return wire.ack(self.command_id, self.applied.seq)
        return None


async def apply_command(
    session: Session, text: str | bytes, counters: Counters | None = None
) -> CommandOutcome:
    """Parse the command ``text`` (DESIGN §6) and apply it to ``session``; a refusal is
    counted in ``counters`` (by its code)."""
    outcome = await _apply(session, text)
    if outcome.applied is None and counters is not None:
        counters.refuse(outcome.code)
    return outcome


async def _apply(session: Session, text: str | bytes) -> CommandOutcome:
    try:
        command = wire.parse_command(text)
    except CommandError as exc:
        return CommandOutcome(code=exc.code, message=str(exc))
    return await apply(session, command)


async def apply(session: Session, command: Command) -> CommandOutcome:
    """Apply ``command`` to ``session``: what became of it, as the client is told."""
    try:
        applied = await session.apply(command)
    except SessionStateError as exc:
        return CommandOutcome(code="bad_state", message=str(exc))
    except SessionLogError as exc:
        return CommandOutcome(code="log_unavailable", message=str(exc))
    except (ValueError, TypeError) as exc:
        return CommandOutcome(code="bad_command", message=str(exc))
    except trio.ClosedResourceError:
        return CommandOutcome(code="shutting_down", message="the session is closing")
    return CommandOutcome(applied, command.id)


class Client(abc.ABC):
    """One client of one session (see the module docstring).

    Its life: ``end()`` decides how it ends and cancels ``scope`` (around its tasks);
    ``close`` is the ``(code, reason)`` decided (None: none yet), ``gone`` that the peer
    is gone and nothing more can be sent.  The server sets ``session`` when it attaches
    the client, calls :meth:`run`, :meth:`flush` if the client was cancelled from
    outside, and :meth:`drain` when it stops.  ``transport`` names its kind for the
    server's statistics (``clients_by_transport``).
    """

    transport: ClassVar[str] = "other"

    def __init__(self, counters: Counters, limits: ServerLimits) -> None:
        self.counters = counters
        self.limits = limits
        self.session: Session | None = None  # set once attached
        self.scope = trio.CancelScope()
        self.close: tuple[int, str] | None = None
        self.gone = False  # the peer is gone: no close frame to send
        self.through: int | None = None  # draining: close 1001 once this seq is sent
        self.heartbeat: float | None = None  # silent this long: send_heartbeat (None: never)
        self._waiting: trio.CancelScope | None = None  # around the pump's wait for events

    # ---- what a transport provides --------------------------------------------------

    @abc.abstractmethod
    async def send_frame(self, events: list[dict[str, Any]]) -> bool:
        """Send the wire dicts of one batch (merged, in ``seq`` order) as one frame of
        this framing; False if it could not go out (the client is ended then)."""

    @abc.abstractmethod
    async def run(
        self, session: Session, sub: Subscription, snapshot: ev.StateSnapshot | None
    ) -> None:
        """The client's tasks, inside ``scope``: at least :meth:`pump` of ``sub``."""

    async def send_heartbeat(self) -> bool:
        """Tell the peer the stream is alive (it was silent for ``heartbeat`` seconds);
        False if it could not go out.  The default sends nothing."""
        return True

    def resume_hint(self, seq: int) -> str:
        """How this client replays what follows ``seq`` (said to an evicted client)."""
        return f"reconnect with ?after={seq} to replay the rest"

    async def cannot_replay(self, code: str, message: str) -> bool:
        """The log cannot replay what this client asked for (``code``: ``bad_after`` or
        ``log_trimmed``): tell it.  True to go on from a ``state`` snapshot instead
        (a client that cannot reconnect differently), False to end it (the default:
        refused, the client reconnects without ``after``)."""
        await self.refuse(code, f"{message}; reconnect without after")
        return False

    # ---- its end ----------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """Whether its end was decided (a close, or the peer gone): False for a client
        cancelled from outside, which is owed what was published for it."""
        return self.close is not None or self.gone

    def end(self, code: int | None = None, reason: str = "", *, gone: bool = False) -> None:
        """End this client: close with ``code`` (unless a close was decided already),
        or, ``gone``, with no close frame (the peer is gone)."""
        if gone:
            self.gone = True
        elif self.close is None and code is not None:
            self.close = (code, reason)
        self.scope.cancel()

    def drain(self, through: int) -> None:
        """Close with 1001 once every event up to seq ``through`` has gone out (the
        server is stopping).  A pump waiting for events is woken; one sending a frame
        finishes it first (a cancel now would cut the frame).  Synchronous, not a
        checkpoint."""
        self.through = through
        if self._waiting is not None:
            self._waiting.cancel()

    async def refuse(self, code: str, message: str) -> None:
        """Tell a client that can't go on why (an ``error`` ``code``); it is closed
        with 1013 for a ``max_*`` limit, else 1008, and ``code: message``."""
        self.close = (
            CLOSE_TRY_AGAIN_LATER if code.startswith("max_") else CLOSE_EVICTED,
            f"{code}: {message}",
        )
        await self.send_error(code, message)

    # ---- sending ----------------------------------------------------------------------

    async def send_events(self, batch: list[ev.Event]) -> bool:
        """Send ``batch`` as one frame, consecutive text events merged."""
        dicts, merged = wire.merge_events(batch)
        if not await self.send_frame(dicts):
            return False
        self.counters.frames += 1
        self.counters.events += len(batch)
        self.counters.merged += merged
        return True

    async def send_error(self, code: str, message: str) -> bool:
        """Send an ``error`` event for this client only (in no session's log)."""
        self.counters.errors += 1
        return await self.send_frame([wire.client_error(code, message).to_dict()])

    # ---- the pump ---------------------------------------------------------------------

    async def pump(self, sub: Subscription, snapshot: ev.StateSnapshot | None) -> None:
        """The UI consumer: ``snapshot`` first (if any), then wait for events, drain all
        that are waiting, send them as one frame (merged), repeat — until the client
        is evicted, the log is trimmed past it, the session ends, or it is drained."""
        if snapshot is not None:
            if not await self.send_frame([snapshot.to_dict()]):
                return
            self.counters.frames += 1
        while True:
            if self.through is not None and sub.last_seq >= self.through:
                self.end(CLOSE_GOING_AWAY, "server shutting down")  # drained
                return
            live = not sub.replaying
            try:
                batch = await self._next_batch(sub)
            except SubscriberEvicted as exc:
                message = f"evicted: {exc.reason}; {self.resume_hint(exc.last_seq)}"
                self.close = (CLOSE_EVICTED, message)
                await self.send_error("evicted", message)
                self.end()
                return
            except LogTrimmed as exc:
                message = f"{exc}; reconnect without after"
                self.close = (CLOSE_EVICTED, f"log_trimmed: {message}")
                await self.send_error("log_trimmed", message)
                self.end()
                return
            except trio.EndOfChannel:
                # (a client is drained once its server stops: then the session closing
                # is the server shutting down)
                reason = "server shutting down" if self.through is not None else "session closed"
                self.end(CLOSE_GOING_AWAY, reason)
                return
            if batch is None:
                # Woken by drain() (the check above ends the client), or silent for
                # ``heartbeat`` seconds.
                if self.through is None and not await self.send_heartbeat():
                    return
                continue
            if not await self.send_events(batch):
                return
            if live:  # (a replay's events were published long ago)
                self.counters.send_latency.observe(time.time() - batch[0].ts)

    async def _next_batch(self, sub: Subscription) -> list[ev.Event] | None:
        """Wait for events and take every one waiting; None if ``drain()`` woke the
        wait, or none came for ``heartbeat`` seconds (a cancelled ``receive_batch``
        takes nothing, so nothing is lost)."""
        deadline = math.inf if self.heartbeat is None else trio.current_time() + self.heartbeat
        with trio.CancelScope(deadline=deadline) as self._waiting:
            try:
                # At most a subscriber's capacity per frame: a replay of a long log
                # goes out in frames of bounded size.
                return await sub.receive_batch(self.limits.subscriber_capacity)
            finally:
                self._waiting = None
        return None

    async def flush(self, sub: Subscription) -> None:
        """Send every event waiting in ``sub`` (no waiting for more)."""
        while True:
            try:
                batch = sub.receive_batch_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, SubscriberEvicted, LogTrimmed):
                return
            if not await self.send_events(batch):
                return
