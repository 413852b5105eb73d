"""``RedisLog``: session logs, leases and command streams on one Redis, via coredis.

The keys of session ``S`` (under ``{prefix}``, the session in a hash tag):

- ``:log`` — the log: one entry per event, id ``{seq}-0``, field ``e`` the wire JSON, so
  the stream's ids *are* the seqs; appended by :data:`~.scripts.APPEND`, fenced by the
  lease and the seq;
- ``:owner`` — the lease, ``SET NX PX``, renewed every third of its TTL;
- ``:cmd`` — commands forwarded by replicas; ``:cmd_done`` — the last one the owner took;
- ``:reply:{nonce}`` — the owner's verdict on one forwarded command.

The coredis pitfall: a blocking read that is cancelled invalidates its connection, and
the pool never gets that slot back.  So no blocking read ever runs on the shared pool:
each tail, and each wait for a verdict, has a dedicated client of one connection,
discarded on cancel or error.  See docs/redis.md.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import coredis
import orjson
import trio
from coredis import PureToken
from coredis.retry import NoRetryPolicy

from .._bus import DEFAULT_LOG_MAX_EVENTS
from .._core import events as ev
from ..errors import LeaseLost, LogTrimmed, RedisLogError
from .defaults import (
    COMMAND_REPLY_TIMEOUT,
    COMMAND_STREAM_MAXLEN,
    DEFAULT_BLOCK,
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_PREFIX,
    READ_BATCH,
    REPLY_TTL,
)
from .outage import backoff, unavailable
from .scripts import APPEND, RELEASE, RENEW, REPLY
from .verdicts import raise_refusal

__all__ = [
    "RedisLog",
    "RedisStatistics",
    "decode_entry",
    "open_redis_log",
    "seq_of",
]

if TYPE_CHECKING:
    from .._runtime.session import Applied
    from .replica import SessionReplica

logger = logging.getLogger("trio_agent.redis")


def seq_of(identifier: bytes | str) -> int:
    text = identifier.decode() if isinstance(identifier, bytes) else identifier
    return int(text.partition("-")[0])


def decode_entry(entry: Any) -> ev.Event:
    data = entry.field_values[b"e"]
    event = ev.from_wire(data)
    if event.seq != seq_of(entry.identifier):
        raise RedisLogError(
            f"log entry {entry.identifier!r} carries seq {event.seq}: the stream is corrupt"
        )
    return event


@attrs.frozen(slots=True)
class RedisStatistics:
    """What a :class:`RedisLog` is doing, as ``RedisLog.statistics()`` counts it."""

    max_connections: int
    """Connections in the shared pool (which carries only non-blocking commands)."""
    tails_open: int
    """Tails (``XREAD BLOCK`` readers of a log or command stream) running now."""
    commands_waiting: int
    """Forwarded commands waiting for their owner's verdict."""
    dedicated_connections: int
    """Clients of one connection open now, one per tail and per waiting command (the
    coredis pitfall: no blocking read ever runs on the shared pool)."""


class RedisLog:
    """Session logs and command streams on one Redis.  Made by :func:`open_redis_log`,
    which owns its connection pool; pass it to ``open_runtime(log=...)``."""

    def __init__(
        self,
        client: coredis.Redis[bytes],
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        block: float = DEFAULT_BLOCK,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        node: str | None = None,
        reply_timeout: float | None = None,
    ) -> None:
        if not lease_ttl > 0.03:
            raise ValueError(f"lease_ttl must be more than 0.03 seconds, got {lease_ttl}")
        if not block > 0:
            raise ValueError(f"block must be positive, got {block}")
        if reply_timeout is None:
            reply_timeout = max(COMMAND_REPLY_TIMEOUT, 2 * lease_ttl)
        if not reply_timeout > 0:
            raise ValueError(f"reply_timeout must be positive, got {reply_timeout}")
        self.client = client
        self.url = url
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.block = block
        self.max_connections = max_connections
        self.node = node or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.reply_timeout = reply_timeout
        """Seconds a forwarded command waits for its verdict (see
        :data:`COMMAND_REPLY_TIMEOUT`)."""
        self._tails = 0
        self._waiting = 0
        self._dedicated_open = 0
        self._replicas: dict[str, SessionReplica] = {}

    # ---- keys ---------------------------------------------------------------------

    def key(self, session: str, kind: str) -> str:
        """``{prefix}:{session}:{kind}`` (the session in a hash tag: one cluster slot)."""
        return f"{self.prefix}:{{{session}}}:{kind}"

    def token(self, session: str) -> str:
        """What this process writes into a session's lease."""
        return f"{self.node}:{session}"

    # ---- the log ------------------------------------------------------------------

    async def read(self, session: str, after: int = 0) -> list[ev.Event]:
        """The events of ``session`` with ``seq > after`` (XRANGE, in chunks).

        Raises :class:`~trio_agent.errors.LogTrimmed` if ``MAXLEN`` trimmed some of
        them away — never a silent gap.
        """
        key = self.key(session, "log")
        out: list[ev.Event] = []
        start = after + 1
        while True:
            entries = await self.client.xrange(key, f"{start}-0", "+", count=READ_BATCH)
            for entry in entries:
                event = decode_entry(entry)
                expected = out[-1].seq + 1 if out else after + 1
                if event.seq != expected:
                    raise LogTrimmed(expected - 1, event.seq)
                out.append(event)
            if len(entries) < READ_BATCH:
                return out
            start = out[-1].seq + 1

    async def last_seq(self, session: str) -> int:
        top = await self.client.xrevrange(self.key(session, "log"), "+", "-", count=1)
        return seq_of(top[0].identifier) if top else 0

    async def append(
        self, session: str, events: Sequence[ev.Event], *, maxlen: int = DEFAULT_LOG_MAX_EVENTS
    ) -> None:
        """Append ``events`` (consecutive seqs, stamped) as the session's owner.

        Idempotent.  Raises :class:`LeaseLost` if this process does not hold the
        lease, :class:`RedisLogError` on a seq gap, coredis' errors if Redis fails.
        """
        if not events:
            return
        args: list[str | bytes | int] = [self.token(session), maxlen, events[0].seq]
        args.extend(e.to_wire() for e in events)
        try:
            await self.client.eval(
                APPEND, [self.key(session, "log"), self.key(session, "owner")], args
            )
        except coredis.exceptions.ResponseError as exc:
            message = str(exc)
            if "NOTOWNER" in message:
                raise LeaseLost(
                    f"can't append to session {session!r}: this process ({self.node}) "
                    "no longer holds its lease"
                ) from None
            raise RedisLogError(f"can't append to session {session!r}: {message}") from None

    @asynccontextmanager
    async def _dedicated(self) -> AsyncIterator[coredis.Redis[bytes]]:
        """A client with a pool of one connection, for one blocking reader: when a
        read on it is cancelled, the connection dies with this client, not in the
        shared pool (the coredis pitfall, see the module docstring)."""
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url,
            max_connections=1,
            # Only this reader uses it: waiting for its one slot means the slot leaked
            # (a read died with its connection); fail at once, a new client follows.
            pool_timeout=1.0,
            stream_timeout=self.block + 5.0,
            connect_timeout=5.0,
            # Fail fast: the tail reconnects (with backoff) on a fresh client.
            retry_policy=NoRetryPolicy(),
        )
        self._dedicated_open += 1
        try:
            async with client:
                yield client
        finally:
            self._dedicated_open -= 1

    async def tail(
        self,
        key: str,
        after_id: str,
        deliver: Callable[[list[Any]], Awaitable[None]],
        *,
        count: int = READ_BATCH,
    ) -> None:
        """Call ``deliver`` with each batch of entries of stream ``key`` after
        ``after_id``, as they come; runs until cancelled.  XREAD BLOCK on a dedicated
        connection, from the last id read (never ``$``); reconnects with backoff when
        Redis fails and goes on from the last id delivered.  Cancel-safe: a cancelled
        tail loses its own connection only.

        (A callback, not an async generator: the connection's task group must not be
        held open across a ``yield``.)"""
        last = after_id
        attempt = 0
        while True:
            try:
                async with self._counted_tail(), self._dedicated() as client:
                    while True:
                        reply = await client.xread(
                            {key: last}, count=count, block=int(self.block * 1000)
                        )
                        attempt = 0
                        if not reply:
                            continue
                        entries = next(iter(reply.values()))
                        if entries:
                            ident = entries[-1].identifier
                            await deliver(list(entries))
                            last = ident.decode() if isinstance(ident, bytes) else ident
            except Exception as exc:
                if not unavailable(exc):
                    raise
                delay = backoff(attempt)
                attempt += 1
                logger.info("tail of %s failed (%s); reconnecting in %.2fs", key, exc, delay)
                await trio.sleep(delay)

    @asynccontextmanager
    async def _counted_tail(self) -> AsyncIterator[None]:
        self._tails += 1
        try:
            yield
        finally:
            self._tails -= 1

    async def tail_events(
        self, session: str, after: int, deliver: Callable[[list[ev.Event]], Awaitable[None]]
    ) -> None:
        """:meth:`tail` of the session's log after seq ``after``, decoded."""

        async def decode(entries: list[Any]) -> None:
            await deliver([decode_entry(e) for e in entries])

        await self.tail(self.key(session, "log"), f"{after}-0", decode)

    # ---- leases -------------------------------------------------------------------

    def _ttl_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))

    async def claim(self, session: str) -> bool:
        """Take the session's lease if nobody holds it (or this process does)."""
        result = await self.client.eval(
            RENEW, [self.key(session, "owner")], [self.token(session), self._ttl_ms()]
        )
        return bool(result)

    async def release(self, session: str) -> None:
        await self.client.eval(RELEASE, [self.key(session, "owner")], [self.token(session)])

    async def owner(self, session: str) -> str | None:
        value = await self.client.get(self.key(session, "owner"))
        return None if value is None else value.decode()

    # ---- commands -----------------------------------------------------------------

    async def send_command(
        self, session: str, command: Mapping[str, Any], *, reply: str | None = None
    ) -> None:
        """Append a client command (wire form, ``{"op": …}``) to the command stream;
        with ``reply`` (a nonce), the owner sends its verdict to
        ``{prefix}:{session}:reply:{nonce}`` (see :meth:`forward_command`)."""
        fields: dict[str | bytes, str | bytes] = {"c": orjson.dumps(dict(command))}
        if reply is not None:
            fields["r"] = reply
        await self.client.xadd(
            self.key(session, "cmd"),
            fields,
            trim_strategy=PureToken.MAXLEN,
            threshold=COMMAND_STREAM_MAXLEN,
            trim_operator=PureToken.APPROXIMATELY,
        )

    async def forward_command(self, session: str, command: Mapping[str, Any]) -> Mapping[str, Any]:
        """Send a command to the owner of ``session`` and return once the owner applied
        it; raise what the owner's refusal means (:data:`VERDICTS`: e.g.
        ``SessionStateError`` with the owner's message).  Nothing is judged here: this
        process's copy of the session may lag the owner's.

        The command goes on the command stream with a fresh nonce; the owner, after
        applying it (a ``cancel``: once its ``done`` is published), pushes its verdict
        to ``{prefix}:{session}:reply:{nonce}``, which this call pops (``BLPOP`` on a
        dedicated connection, in slices of ``block`` seconds, reconnecting with backoff:
        the coredis pitfall, see the module docstring).  No verdict within
        :attr:`reply_timeout` raises :class:`RedisLogError`; the command may still be
        applied after that (it is on the stream).  Cancel-safe: a cancelled wait loses
        its own connection only, and the verdict expires unread.
        """
        op = command.get("op")
        nonce = uuid.uuid4().hex
        key = self.key(session, f"reply:{nonce}")
        timeout = self.reply_timeout
        self._waiting += 1
        try:
            with trio.move_on_after(timeout):
                try:
                    await self.send_command(session, command, reply=nonce)
                except Exception as exc:
                    if not unavailable(exc):
                        raise
                    raise RedisLogError(
                        f"can't send {op!r} to session {session!r}: Redis is unavailable ({exc})"
                    ) from None
                verdict = await self._collect(key)
                raise_refusal(verdict)
                return verdict
        finally:
            self._waiting -= 1
        raise RedisLogError(
            f"no verdict on {op!r} from the owner of session {session!r} within "
            f"{timeout:g}s (reply_timeout): the command was sent and may still be "
            "applied later; is any process serving the session?"
        )

    async def _collect(self, key: str) -> Mapping[str, Any]:
        """Pop the verdict at ``key`` when it comes (until cancelled)."""
        attempt = 0
        while True:
            got: list[bytes] | None = None
            try:
                async with self._dedicated() as client:
                    while got is None:
                        got = await client.blpop([key], timeout=self.block)
            except Exception as exc:
                if not unavailable(exc):
                    raise
                delay = backoff(attempt)
                attempt += 1
                logger.info("waiting for %s failed (%s); reconnecting in %.2fs", key, exc, delay)
                await trio.sleep(delay)
                continue
            try:
                verdict = orjson.loads(got[1])
            except orjson.JSONDecodeError:
                verdict = None
            if not isinstance(verdict, dict):
                raise RedisLogError(f"the verdict at {key} is not a JSON object: {got[1]!r}")
            return verdict

    async def reply(
        self,
        session: str,
        nonce: str,
        verdict: str,
        message: str = "",
        applied: Applied | None = None,
    ) -> None:
        """As the owner: the verdict on the forwarded command that carried ``nonce``
        (``accepted`` with what applied it, or a refusal of ``VERDICTS`` with its
        message)."""
        body: dict[str, Any] = {"verdict": verdict, "message": message}
        if applied is not None:
            body["seq"] = applied.seq
            body["duplicate"] = applied.duplicate
        await self.client.eval(
            REPLY,
            [self.key(session, f"reply:{nonce}")],
            [orjson.dumps(body), max(1, int(REPLY_TTL * 1000))],
        )

    # ---- statistics ---------------------------------------------------------------

    def statistics(self) -> RedisStatistics:
        """What this log is doing now, counted by itself (not read off coredis)."""
        return RedisStatistics(
            max_connections=self.max_connections,
            tails_open=self._tails,
            commands_waiting=self._waiting,
            dedicated_connections=self._dedicated_open,
        )

    # ---- a session, in a runtime (the backend seam of ``open_runtime(log=...)``) ---

    def host(self, session: str, *, max_events: int, max_bytes: int) -> SessionReplica:
        """The place of ``session`` in this process: its two buses, and the task that
        replays its log, then owns it or replicates it (see
        :class:`~trio_agent.redis.replica.SessionReplica`)."""
        from .replica import SessionReplica  # (it imports this module)

        return SessionReplica(
            self, session, max_events=max_events, max_bytes=max_bytes, on_run=self._running
        )

    def replica(self, session: str) -> SessionReplica | None:
        """The :class:`~trio_agent.redis.replica.SessionReplica` serving ``session`` in
        this process now, if any: its ``bus`` is the working bus (what the agent loop
        published, ahead of what the session shows while Redis is slow or down), its
        ``owner`` says whether this process owns the session.  For monitoring and
        tests; clients read the session (``Session.subscribe``)."""
        return self._replicas.get(session)

    def _running(self, replica: SessionReplica, running: bool) -> None:
        if running:
            self._replicas[replica.id] = replica
        elif self._replicas.get(replica.id) is replica:
            del self._replicas[replica.id]


@asynccontextmanager
async def open_redis_log(
    url: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    block: float = DEFAULT_BLOCK,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    node: str | None = None,
    reply_timeout: float | None = None,
) -> AsyncIterator[RedisLog]:
    """``async with open_redis_log("redis://127.0.0.1:6379/0") as log:`` — then
    ``open_runtime(log=log)``.  Owns the shared connection pool (closed on exit).
    ``reply_timeout``: seconds a command forwarded to another process waits for its
    verdict (default: :data:`COMMAND_REPLY_TIMEOUT` or twice ``lease_ttl``)."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        url,
        max_connections=max_connections,
        pool_timeout=pool_timeout,
        connect_timeout=5.0,
        stream_timeout=30.0,
    )
    async with client:
        yield RedisLog(
            client,
            url,
            prefix=prefix,
            lease_ttl=lease_ttl,
            block=block,
            max_connections=max_connections,
            node=node,
            reply_timeout=reply_timeout,
        )
