"""``SessionReplica``: one session on Redis, in one process — owner or replica.

One process owns a session: it holds the lease and runs the agent loop.  Every other
process that opens the session is a *replica*: it tails the log into its own copy (so
its clients see the same events in the same order) and routes the session's commands
to the owner (``Session.route_commands``), which decides them.  A replica tries to take
the lease every third of its TTL; when the owner died it gets it, reads the log to its
end, and closes what the dead owner left in flight (``Session.recover``) before it runs
the agent loop (``Session.serve``).

Inside one process a session keeps two buses.  ``bus`` is the working bus the agent
loop publishes to; its one subscriber is the *relay*, which appends each batch to Redis
and then hands the events, now durable, to ``view``, the bus clients read.  So a client
anywhere sees only events Redis has acknowledged.  On a replica the tail feeds the
working bus and the relay only copies.

Redis unavailable: the relay's append fails; it interrupts the run (hard, with the
reason) and publishes an ``error`` ``redis_unavailable`` (retryable), then retries with
backoff; the run stays paused until ``resume``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import coredis
import trio
from coredis.exceptions import RedisError

from .._bus import EventBus, EventLog, Subscription
from .._core import events as ev
from .._core import wire
from .._core.commands import Command
from .._runtime.session import Applied
from ..errors import LeaseLost, SessionStateError
from .defaults import RELAY_CAPACITY, RELAY_STALL_TIMEOUT, REPLY_SEND_TIMEOUT, WRITE_BATCH
from .log import RedisLog
from .outage import backoff, unavailable

if TYPE_CHECKING:
    from .._runtime.session import Session

__all__ = ["SessionReplica"]

logger = logging.getLogger("trio_agent.redis")


class SessionReplica:
    """One session on Redis, in one process: its two buses and the task serving it (a
    :class:`~trio_agent._runtime.backend.SessionHost`, made by ``RedisLog.host``)."""

    def __init__(
        self,
        log: RedisLog,
        session: str,
        *,
        max_events: int,
        max_bytes: int,
        on_run: Callable[[SessionReplica, bool], None] = lambda replica, running: None,
    ) -> None:
        self.log = log
        self._on_run = on_run
        self.id = session
        self.bus = EventBus(session, log=EventLog(max_events, max_bytes))
        """The working bus: the agent loop publishes here (the owner), or the tail
        copies the log here (a replica)."""
        self.view = EventBus(session, log=EventLog(max_events, max_bytes))
        """The visible bus: only what Redis made durable."""
        self.owner = False
        self.persist_after = math.inf  # events with a higher seq are appended by the relay
        self.maxlen = max_events
        self._session: Session | None = None  # set in ``run``
        self._pending: list[ev.Event] = []  # the relay's batch not yet durable
        self._sub: Subscription | None = None
        self._outage = False
        self._nursery: trio.Nursery | None = None  # this session's (set in ``run``)

    @property
    def session(self) -> Session:
        assert self._session is not None, "the replica is not running"
        return self._session

    async def run(self, session: Session, *, task_status: trio.TaskStatus[None]) -> None:
        """Serve ``session``: replay its log, then own it or replicate it (and take it
        over when its owner dies); ``task_status.started()`` once it shows its log.
        Runs until cancelled or until the lease is lost."""
        self._session = session
        self._on_run(self, True)
        try:
            await self._run(session, task_status)
        finally:
            self._on_run(self, False)

    async def _run(self, session: Session, task_status: trio.TaskStatus[None]) -> None:
        log, bus, view = self.log, self.bus, self.view
        for event in await log.read(self.id, 0):
            bus.publish_nowait(event)
            view.publish_nowait(event)
        self._sub = bus.open_subscription(
            after=bus.log.last_seq,
            capacity=RELAY_CAPACITY,
            policy="block",
            stall_timeout=RELAY_STALL_TIMEOUT,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._relay)
                owned = await log.claim(self.id)
                if not owned:
                    session.route_commands(self._forward)
                    tail_scope = trio.CancelScope()
                    tail_done = trio.Event()
                    nursery.start_soon(self._mirror, tail_scope, tail_done)
                    task_status.started()
                    await self._wait_for_lease()
                    tail_scope.cancel()
                    await tail_done.wait()
                # We hold the lease: the previous owner can append nothing more.
                for event in await log.read(self.id, bus.log.last_seq):
                    await bus.publish(event)
                self.persist_after = bus.log.last_seq
                self.owner = True
                session.route_commands(None)
                if owned:
                    task_status.started()
                nursery.start_soon(self._keep_lease)
                nursery.start_soon(self._read_commands)
                # A run the log shows going had an owner that died (its lease expired,
                # whether another process waited for it or none was there): close what it
                # left in flight (nothing to do for a session at rest).
                await session.recover(
                    f"recovered by {log.node}: the previous owner's lease expired "
                    "(its process died or lost Redis)"
                )
                await session.serve()
        except* LeaseLost as group:
            logger.warning("session %r: %s; closing it here", self.id, group.exceptions[0])
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                bus.close()
                await self._flush()
                if self.owner:
                    try:
                        await log.release(self.id)
                    except Exception as exc:
                        if not unavailable(exc):
                            raise
                        # (the lease expires)
            self._sub.close()
            view.close()

    # ---- replica side -------------------------------------------------------------

    async def _mirror(self, scope: trio.CancelScope, done: trio.Event) -> None:
        """Tail the log into the working bus (the relay copies it into the view)."""
        bus = self.bus
        try:
            with scope:

                async def ingest(batch: list[ev.Event]) -> None:
                    for event in batch:
                        if event.seq > bus.log.last_seq:  # (not read again after a reconnect)
                            await bus.publish(event)

                await self.log.tail_events(self.id, bus.log.last_seq, ingest)
        finally:
            done.set()

    async def _wait_for_lease(self) -> None:
        while True:
            await trio.sleep(self.log.lease_ttl / 3)
            try:
                if await self.log.claim(self.id):
                    logger.info("session %r: took over the lease (%s)", self.id, self.log.node)
                    return
            except Exception as exc:
                if not unavailable(exc):
                    raise
                logger.info("session %r: can't reach Redis to claim the lease: %s", self.id, exc)

    async def _forward(self, command: Command) -> Applied:
        """A command on a replica: sent to the owner unjudged (this copy of the state
        may lag the owner's), which decides it; its refusal is raised here
        (:meth:`RedisLog.forward_command`).  Holds nothing the session needs: if this
        process takes the session over meanwhile, its own command reader applies the
        command and the verdict comes back the same way."""
        verdict = await self.log.forward_command(self.id, wire.command_to_wire(command))
        return Applied(int(verdict.get("seq", 0)), duplicate=bool(verdict.get("duplicate")))

    # ---- owner side ---------------------------------------------------------------

    async def _keep_lease(self) -> None:
        while True:
            await trio.sleep(self.log.lease_ttl / 3)
            try:
                held = await self.log.claim(self.id)
            except Exception as exc:
                if not unavailable(exc):
                    raise
                logger.warning("session %r: can't renew the lease: %s", self.id, exc)
                continue
            if not held:
                raise LeaseLost(
                    f"another process took the lease of session {self.id!r} "
                    f"(now held by {await self.log.owner(self.id)!r})"
                )

    async def _read_commands(self) -> None:
        """Apply the commands other processes forward, in order, each at most once
        (its id is recorded before it is applied), and send each its verdict.  A
        command not taken yet when the session begins closing here is left on the
        stream for the process that takes the session over.  Survives Redis restarts."""
        log, session = self.log, self.session
        done_key = log.key(self.id, "cmd_done")
        after: str | None = None
        attempt = 0
        while True:
            try:
                if after is None:
                    start = await log.client.get(done_key)
                    after = start.decode() if start is not None else "0-0"

                async def apply(entries: list[Any]) -> None:
                    nonlocal after, attempt
                    for entry in entries:
                        if session.closed:  # left for the process that takes it over
                            return
                        ident = entry.identifier
                        await log.client.set(done_key, ident)
                        after = ident.decode() if isinstance(ident, bytes) else str(ident)
                        attempt = 0
                        await self._apply(after, entry.field_values)

                await log.tail(log.key(self.id, "cmd"), after, apply)
            except Exception as exc:
                if not unavailable(exc):
                    raise
                await trio.sleep(backoff(attempt))
                attempt += 1

    async def _apply(self, ident: str, fields: Mapping[bytes, bytes]) -> None:
        """Apply one forwarded command (already recorded as taken) and send its
        verdict to the process waiting for it (field ``r``: the reply nonce)."""
        nonce = fields[b"r"].decode() if b"r" in fields else None
        applied: Applied | None = None
        try:
            command = wire.parse_command(fields.get(b"c", b"").decode())
            applied = await self.session.apply(command)
        except SessionStateError as exc:
            verdict, message = "bad_state", str(exc)
        except (ValueError, TypeError) as exc:  # (a wire.CommandError is a ValueError)
            verdict, message = "bad_command", str(exc)
        except trio.ClosedResourceError:  # closing began here: nothing was applied
            verdict = "closing"
            message = (
                f"session {self.id!r} is closing on its owner ({self.log.node}): "
                "the command was not applied"
            )
        except trio.Cancelled:
            # This process stops serving the session (closing, lease lost) during the
            # command (a ``cancel`` waiting for ``done``, say): say so, then go.
            await self._reply(
                nonce,
                "closing",
                f"session {self.id!r} stopped being served by its owner ({self.log.node}) "
                "while it applied the command, which may have taken effect",
            )
            raise
        else:
            verdict, message = "accepted", ""
        if verdict != "accepted":
            logger.info("session %r: command %s refused (%s): %s", self.id, ident, verdict, message)
        await self._reply(nonce, verdict, message, applied)

    async def _reply(
        self, nonce: str | None, verdict: str, message: str, applied: Applied | None = None
    ) -> None:
        """Send a verdict (shielded, bounded by :data:`REPLY_SEND_TIMEOUT`); a verdict
        Redis fails to take is logged, and its forwarder times out."""
        if nonce is None:  # (the sender waits for no verdict)
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + REPLY_SEND_TIMEOUT
            try:
                await self.log.reply(self.id, nonce, verdict, message, applied)
            except (RedisError, OSError) as exc:
                logger.warning("session %r: can't send a verdict (%s): %s", self.id, verdict, exc)
        if scope.cancelled_caught:
            logger.warning(
                "session %r: can't send a verdict (%s) within %gs (REPLY_SEND_TIMEOUT)",
                self.id,
                verdict,
                REPLY_SEND_TIMEOUT,
            )

    async def _relay(self) -> None:
        """Append each batch of the working bus to Redis (owner), then hand it to the
        view.  On a replica, the events came from Redis: only the hand-over."""
        assert self._sub is not None
        while True:
            if not self._pending:
                try:
                    self._pending = await self._sub.receive_batch(WRITE_BATCH)
                except trio.EndOfChannel:
                    return
            await self._persist_pending()
            for event in self._pending:
                await self.view.publish(event)
            self._pending = []

    async def _persist_pending(self) -> None:
        attempt = 0
        while True:
            fresh = [e for e in self._pending if e.seq > self.persist_after]
            try:
                await self.log.append(self.id, fresh, maxlen=self.maxlen)
            except Exception as exc:
                if not unavailable(exc):
                    raise
                if isinstance(exc, coredis.exceptions.ResponseError):
                    raise
                if not self._outage:
                    self._outage = True
                    # (its own task: the interrupt waits for the relay, which is us)
                    assert self._nursery is not None  # (the relay runs in it)
                    self._nursery.start_soon(self._pause, exc)
                await trio.sleep(backoff(attempt))
                attempt += 1
                continue
            if self._outage:
                self._outage = False
                logger.warning("session %r: Redis is back", self.id)
            return

    async def _pause(self, exc: BaseException) -> None:
        """Redis failed an append: interrupt the run (it waits for ``resume``), say why."""
        session = self.session
        message = f"Redis is unavailable, events are held until it is back: {exc}"
        logger.warning("session %r: %s", self.id, message)
        try:
            if session.state.running:
                await session.interrupt("hard", reason=f"redis unavailable: {exc}")
        except (SessionStateError, trio.ClosedResourceError) as why:
            # Not running any more, a hard interrupt or a cancel is pending already,
            # or the session is closing: nothing to pause.
            logger.info("session %r: no interrupt for the outage: %s", self.id, why)
        s = session.state
        try:
            await self.bus.publish(
                ev.Error(
                    run=s.run,
                    step=s.step,
                    code="redis_unavailable",
                    message=message,
                    retryable=True,
                )
            )
        except trio.ClosedResourceError:
            pass

    async def _flush(self) -> None:
        """On the way out (shielded, bounded): make durable what the relay holds."""
        if self._sub is None:
            return
        while True:
            if not self._pending:
                try:
                    self._pending = self._sub.receive_batch_nowait(WRITE_BATCH)
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    return
            if self.owner:
                try:
                    await self.log.append(
                        self.id,
                        [e for e in self._pending if e.seq > self.persist_after],
                        maxlen=self.maxlen,
                    )
                except Exception as exc:
                    # Lost the lease (the usual way here: the relay or the renewal
                    # found it gone): the fence refuses these events, and they are
                    # not durable, so they are dropped, never shown to clients.
                    if not (isinstance(exc, LeaseLost) or unavailable(exc)):
                        raise
                    logger.warning("session %r: events not flushed to Redis: %s", self.id, exc)
                    return
            view = self.view
            for event in self._pending:
                if event.seq <= view.log.last_seq:
                    continue  # the relay handed it over before it was cancelled
                try:
                    view.publish_nowait(event)
                except (trio.WouldBlock, trio.ClosedResourceError):
                    break  # a full client is closed now: it replays the rest on reconnect
            self._pending = []
