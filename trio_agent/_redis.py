"""Sessions past one process: the log and the commands on Redis Streams, through coredis.

``open_redis_log(url)`` gives a :class:`RedisLog`; ``open_runtime(log=redis_log)`` makes
every session of that runtime live on Redis (in-memory stays the default):

- **The log** of session ``S`` is the stream ``{prefix}:{S}:log``.  Each event is one
  entry whose id is ``{seq}-0`` and whose field ``e`` is the event's wire JSON, so the
  stream's ids *are* the seqs: replay after seq ``n`` is ``XRANGE {n+1}-0 +``, the live
  tail is ``XREAD BLOCK`` from the last id replayed (never ``$``), and Redis itself
  refuses an id that is not above the last one.  Entries are appended by one Lua script
  that checks the writer still holds the session's lease and that the batch starts
  right after the stream's last seq (so seq is gapless across processes, and a writer
  that lost its lease is fenced out), then ``XADD … MAXLEN ~ log_max_events``.
- **Ownership**: one process owns a session: it holds the lease ``{prefix}:{S}:owner``
  (``SET NX PX``, renewed every third of its TTL) and runs the agent loop.  Every other
  process that opens the session is a *replica*: it tails the log into its own copy of
  the session (so its clients see the same events in the same order), and forwards
  commands to the command stream ``{prefix}:{S}:cmd``, which the owner reads.
- **The owner decides**: a replica's copy lags, so it judges no command.  Each goes on
  the command stream unjudged, with a nonce; the owner applies it (in order, at most
  once: ``{prefix}:{S}:cmd_done``) and pushes its verdict — ``accepted``, or a refusal
  with its message (:data:`VERDICTS`) — to ``{prefix}:{S}:reply:{nonce}`` (``RPUSH`` +
  ``PEXPIRE``, one script).  The forwarding call pops it (``BLPOP`` on a dedicated
  connection) and returns or raises what the owner raised (``SessionStateError`` …),
  so a refusal reaches the one caller, as in one process.  No verdict within
  ``reply_timeout`` (:data:`COMMAND_REPLY_TIMEOUT`) raises :class:`RedisLogError`; the
  command may still be applied later.  A ``cancel``'s verdict follows its ``done``.
- **Recovery**: a replica tries to take the lease every third of the TTL.  When the
  owner died, the lease expires and one replica gets it: it reads the log to its end
  (the old owner can no longer append), and if a run was going it publishes a hard
  ``interrupt``, a ``cancelled`` ``tool_result`` for every call left open, and
  ``interrupted`` with a reason that says the session was recovered; then it runs the
  agent loop, which waits for ``resume``.

Inside one process a session keeps two buses.  ``session.bus`` is the working bus the
agent loop publishes to; its one subscriber is the *relay*, which appends each batch to
Redis and then hands the events, now durable, to ``session.view``, the bus clients
subscribe to.  So a client anywhere sees only events Redis has acknowledged: when the
owner dies, nothing a client saw can be replaced by the process that recovers the
session.  On a replica the tail feeds the working bus and the relay only copies.

**Redis unavailable**: the relay's append fails; it interrupts the run (hard, with the
reason) and publishes an ``error`` ``redis_unavailable`` (retryable), then retries with
backoff; the run stays paused until ``resume``.  What the relay holds is bounded by its
capacity, and the agent loop waits when it is full.  Tails reconnect with backoff and go
on from the last id they read.

**The coredis pitfall**: a blocking read (``XREAD BLOCK``) that is cancelled invalidates
its connection, and the pool never gets that slot back; after ``max_connections``
cancelled reads every command waits forever.  Tails and the owner's command reader are
cancelled all the time (interrupts, clients leaving, takeovers), so no blocking read
ever runs on the shared pool: each tail, and each forwarded command waiting for its
verdict (``BLPOP``), has a *dedicated* connection (a client with a pool of one, owned by
an ``async with``, discarded on cancel or error), and blocks for short slices.  The
shared pool only carries non-blocking commands (which coredis releases before awaiting
the reply) and has a ``pool_timeout``, so exhaustion raises instead of hanging.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import coredis
import orjson
import trio
from coredis import PureToken
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from . import _wire as wire
from . import events as ev
from ._bus import DEFAULT_LOG_MAX_EVENTS, EventBus, EventLog, Subscription
from .errors import LeaseLost, LogTrimmed, RedisLogError, SessionStateError

if TYPE_CHECKING:
    from ._session import Runtime, Session

__all__ = [
    "COMMAND_REPLY_TIMEOUT",
    "DEFAULT_BLOCK",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_PREFIX",
    "RELAY_CAPACITY",
    "LeaseLost",
    "RedisLog",
    "RedisLogError",
    "open_redis_log",
]

logger = logging.getLogger("trio_agent.redis")

DEFAULT_PREFIX: Final = "trio-agent"
"""Key prefix: ``{prefix}:{session}:log``, ``:cmd``, ``:cmd_done``, ``:owner``,
``:reply:{nonce}``."""

DEFAULT_LEASE_TTL: Final = 5.0
"""Seconds a session's lease lives unless renewed (every third of it).  The time a dead
owner's session waits before another process recovers it; short enough that a user
barely waits, long enough that a GC pause or a slow Redis does not hand a live
session over."""

DEFAULT_BLOCK: Final = 1.0
"""Seconds one ``XREAD BLOCK`` of a tail waits at most before it is issued again.  It
does not delay events (a blocked read returns as soon as one is appended); it bounds
how long a half-open connection goes unnoticed."""

DEFAULT_MAX_CONNECTIONS: Final = 32
"""Connections in the shared pool.  It carries only non-blocking commands, which
coredis multiplexes (a connection goes back to the pool before the reply arrives)."""

DEFAULT_POOL_TIMEOUT: Final = 5.0
"""Seconds a command waits for a connection from the shared pool before it raises
(never hangs)."""

RELAY_CAPACITY: Final = 8192
"""Events the relay (the working bus's subscriber that appends to Redis) buffers.  The
agent loop waits when it is full: this bounds the events not yet durable, and so the
memory a Redis outage can pin (tens of MB in the worst case of large tool results)."""

WRITE_BATCH: Final = 512
"""Events appended by one script call: one round trip per batch when the relay is
behind, one per event when it keeps up."""

READ_BATCH: Final = 1000
"""Entries per ``XRANGE``/``XREAD`` reply (a replay of 100k events is 100 calls)."""

COMMAND_STREAM_MAXLEN: Final = 1000
"""Commands the command stream keeps (``MAXLEN ~``).  Commands are read within
milliseconds by the owner; the rest is history for debugging."""

COMMAND_REPLY_TIMEOUT: Final = 10.0
"""Seconds a command forwarded by a replica waits, at most, for the owner's verdict
(``RedisLog.reply_timeout``; the default is this or twice the lease TTL, whichever is
longer).  The owner answers within a few milliseconds: one ``XREAD`` round trip, the
command, one ``RPUSH`` (a ``cancel`` after its ``done``, which is the step's cleanup).
The bound is for the slow paths that still end in a verdict: the owner's command reader
reconnecting after a Redis blip (backoff up to ``BACKOFF_MAX``), and a command forwarded
just as its owner died, which the process that recovers the session applies once the
lease expired (up to 1⅓ lease TTLs, under 7 s by default).  Past it, nobody is serving
the session, and the caller hears so instead of waiting forever."""

REPLY_TTL: Final = 30.0
"""Seconds a verdict waits on Redis for its forwarder (``PEXPIRE``).  The forwarder is
blocked on it already, or collects it after a reconnect (backoff up to
``BACKOFF_MAX``); one whose caller gave up never does, and the key is gone after this."""

REPLY_SEND_TIMEOUT: Final = 2.0
"""Seconds the owner spends, at most, delivering one verdict.  Shielded: the verdict of a
command met by the session's closing still goes out (so its forwarder need not wait out
its timeout); past this the forwarder's own timeout speaks."""

BACKOFF_MIN: Final = 0.05
BACKOFF_MAX: Final = 2.0
"""Reconnect backoff of tails and the relay: from 50 ms, doubling, at most 2 s."""

RELAY_STALL_TIMEOUT: Final = math.inf
"""The relay is never evicted: it *is* the session's durability, so dropping it would
lose events.  It stalls only while Redis is unreachable, and it is bounded by
:data:`RELAY_CAPACITY` (the agent loop waits)."""


VERDICTS: Final[Mapping[str, Callable[[str], Exception]]] = {
    "bad_state": SessionStateError,
    "bad_command": ValueError,
    "closing": trio.ClosedResourceError,
}
"""A forwarded command's refusals, as the owner names them in its verdict, and what the
forwarding call raises for each (with the owner's message): what the same command
raises in one process, so the server answers the client alike (``bad_state``,
``bad_command``, ``shutting_down``).  The one other verdict is ``accepted``."""


# ---- scripts ----------------------------------------------------------------------

_APPEND: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('NOTOWNER this process does not hold the lease of the session')
end
local last = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
local first = tonumber(ARGV[3])
if first > last + 1 then
  return redis.error_reply('SEQGAP the log ends at seq ' .. last ..
    ' but the batch starts at seq ' .. first)
end
for i = 4, #ARGV do
  local seq = first + i - 4
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('%d-0', seq), 'e', ARGV[i])
  end
end
return first + #ARGV - 4
"""
"""Append a batch (idempotent: seqs already there are skipped, so a batch whose reply
was lost can be sent again), fenced by the lease and by the seq."""

_RENEW: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
"""Renew the lease (or take it back if it expired and nobody else took it)."""

_REPLY: Final = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
"""A forwarded command's verdict, for its forwarder's ``BLPOP``; gone after
:data:`REPLY_TTL` if nobody collects it (one script: never a verdict without expiry)."""

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _seq_of(identifier: bytes | str) -> int:
    text = identifier.decode() if isinstance(identifier, bytes) else identifier
    return int(text.partition("-")[0])


def _decode(entry: Any) -> ev.Event:
    data = entry.field_values[b"e"]
    event = ev.from_wire(data)
    if event.seq != _seq_of(entry.identifier):
        raise RedisLogError(
            f"log entry {entry.identifier!r} carries seq {event.seq}: the stream is corrupt"
        )
    return event


def _unavailable(exc: BaseException) -> bool:
    """``exc`` says Redis could not be reached or answered no more (coredis raises
    some of these from inside its task groups, as exception groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_unavailable(e) for e in exc.exceptions)
    return isinstance(exc, RedisError | OSError) and not isinstance(
        exc, coredis.exceptions.ResponseError
    )


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt))


def _raise_refusal(verdict: Mapping[str, Any]) -> None:
    """Nothing if the owner accepted the command; else what its refusal means."""
    code = verdict.get("verdict")
    message = str(verdict.get("message", ""))
    if code == "accepted":
        return
    refusal = VERDICTS.get(str(code))
    if refusal is None:
        raise RedisLogError(f"the owner answered with an unknown verdict {code!r}: {message}")
    raise refusal(message)


@attrs.frozen(slots=True)
class RedisStatistics:
    """The shared pool, as ``RedisLog.statistics()`` sees it."""

    max_connections: int
    free_slots: int
    """Slots a command can take now without waiting (idle connections plus room to
    open new ones).  Equal to ``max_connections`` when nothing is in flight: a pool
    that leaked slots shows less."""
    online_connections: int
    tails_open: int
    commands_waiting: int
    """Forwarded commands waiting for their owner's verdict (each on a dedicated
    connection)."""


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

        Raises :class:`~trio_agent._bus.LogTrimmed` if ``MAXLEN`` trimmed some of
        them away — never a silent gap.
        """
        key = self.key(session, "log")
        out: list[ev.Event] = []
        start = after + 1
        while True:
            entries = await self.client.xrange(key, f"{start}-0", "+", count=READ_BATCH)
            for entry in entries:
                event = _decode(entry)
                expected = out[-1].seq + 1 if out else after + 1
                if event.seq != expected:
                    raise LogTrimmed(expected - 1, event.seq)
                out.append(event)
            if len(entries) < READ_BATCH:
                return out
            start = out[-1].seq + 1

    async def last_seq(self, session: str) -> int:
        top = await self.client.xrevrange(self.key(session, "log"), "+", "-", count=1)
        return _seq_of(top[0].identifier) if top else 0

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
                _APPEND, [self.key(session, "log"), self.key(session, "owner")], args
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
        async with client:
            yield client

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
                if not _unavailable(exc):
                    raise
                delay = _backoff(attempt)
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
            await deliver([_decode(e) for e in entries])

        await self.tail(self.key(session, "log"), f"{after}-0", decode)

    # ---- leases -------------------------------------------------------------------

    def _ttl_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))

    async def claim(self, session: str) -> bool:
        """Take the session's lease if nobody holds it (or this process does)."""
        result = await self.client.eval(
            _RENEW, [self.key(session, "owner")], [self.token(session), self._ttl_ms()]
        )
        return bool(result)

    async def release(self, session: str) -> None:
        await self.client.eval(_RELEASE, [self.key(session, "owner")], [self.token(session)])

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

    async def forward_command(self, session: str, command: Mapping[str, Any]) -> None:
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
                    if not _unavailable(exc):
                        raise
                    raise RedisLogError(
                        f"can't send {op!r} to session {session!r}: Redis is unavailable ({exc})"
                    ) from None
                verdict = await self._collect(key)
                _raise_refusal(verdict)
                return
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
                if not _unavailable(exc):
                    raise
                delay = _backoff(attempt)
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

    async def reply(self, session: str, nonce: str, verdict: str, message: str = "") -> None:
        """As the owner: the verdict on the forwarded command that carried ``nonce``
        (``accepted``, or a refusal of :data:`VERDICTS` with its message)."""
        await self.client.eval(
            _REPLY,
            [self.key(session, f"reply:{nonce}")],
            [
                orjson.dumps({"verdict": verdict, "message": message}),
                max(1, int(REPLY_TTL * 1000)),
            ],
        )

    # ---- statistics ---------------------------------------------------------------

    def statistics(self) -> RedisStatistics:
        pool = self.client.connection_pool
        queue = pool._available_connections._queue
        return RedisStatistics(
            max_connections=self.max_connections,
            free_slots=len(queue),
            online_connections=len(pool._online_connections),
            tails_open=self._tails,
            commands_waiting=self._waiting,
        )

    # ---- a session, in a runtime (the ``SessionLog`` hook of ``open_runtime``) ------

    async def run_session(
        self,
        runtime: Runtime,
        session: Session,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``session`` in ``runtime``: replay its log, then own it or replicate
        it (and take it over when its owner dies).  ``task_status.started()`` once the
        session shows its log; runs until cancelled or until the lease is lost."""
        replica = _Replica(self, runtime, session)
        await replica.run(task_status)


class _Replica:
    """One session in one process: see the module docstring."""

    def __init__(self, log: RedisLog, runtime: Runtime, session: Session) -> None:
        self.log = log
        self.runtime = runtime
        self.session = session
        self.id = session.id
        self.owner = False
        self.persist_after = math.inf  # events with a higher seq are appended by the relay
        self.maxlen = runtime.log_max_events
        self._pending: list[ev.Event] = []  # the relay's batch not yet durable
        self._sub: Subscription | None = None
        self._outage = False
        self._caught_up = trio.Event()
        self._nursery: trio.Nursery | None = None  # this session's (set in ``run``)

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        session, log = self.session, self.log
        bus = session.bus
        view = EventBus(
            self.id, log=EventLog(self.runtime.log_max_events, self.runtime.log_max_bytes)
        )
        for event in await log.read(self.id, 0):
            bus.publish_nowait(event)
            view.publish_nowait(event)
        session.view = view
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
                    session._forward = self._forward
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
                session._forward = None
                if owned:
                    task_status.started()
                nursery.start_soon(self._keep_lease)
                nursery.start_soon(self._read_commands)
                if not owned:
                    await self._recover()
                await session._serve()
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
                        if not _unavailable(exc):
                            raise
                        # (the lease expires)
            self._sub.close()
            view.close()

    # ---- replica side -------------------------------------------------------------

    async def _mirror(self, scope: trio.CancelScope, done: trio.Event) -> None:
        """Tail the log into the working bus (the relay copies it into the view)."""
        bus = self.session.bus
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
                if not _unavailable(exc):
                    raise
                logger.info("session %r: can't reach Redis to claim the lease: %s", self.id, exc)

    async def _forward(self, op: str, args: dict[str, Any]) -> None:
        """A command on a replica: sent to the owner unjudged (this copy of the state
        may lag the owner's), which decides it; its refusal is raised here
        (:meth:`RedisLog.forward_command`).  Holds nothing the session needs: if this
        process takes the session over meanwhile, its own command reader applies the
        command and the verdict comes back the same way."""
        await self.log.forward_command(self.id, {"op": op, **args})

    # ---- owner side ---------------------------------------------------------------

    async def _keep_lease(self) -> None:
        while True:
            await trio.sleep(self.log.lease_ttl / 3)
            try:
                held = await self.log.claim(self.id)
            except Exception as exc:
                if not _unavailable(exc):
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
                if not _unavailable(exc):
                    raise
                await trio.sleep(_backoff(attempt))
                attempt += 1

    async def _apply(self, ident: str, fields: Mapping[bytes, bytes]) -> None:
        """Apply one forwarded command (already recorded as taken) and send its
        verdict to the process waiting for it (field ``r``: the reply nonce)."""
        nonce = fields[b"r"].decode() if b"r" in fields else None
        try:
            command = wire.parse_command(fields.get(b"c", b"").decode())
            await wire.apply_command(self.session, command)
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
        await self._reply(nonce, verdict, message)

    async def _reply(self, nonce: str | None, verdict: str, message: str) -> None:
        """Send a verdict (shielded, bounded by :data:`REPLY_SEND_TIMEOUT`); a verdict
        Redis fails to take is logged, and its forwarder times out."""
        if nonce is None:  # (the sender waits for no verdict)
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + REPLY_SEND_TIMEOUT
            try:
                await self.log.reply(self.id, nonce, verdict, message)
            except (RedisError, OSError) as exc:
                logger.warning("session %r: can't send a verdict (%s): %s", self.id, verdict, exc)
        if scope.cancelled_caught:
            logger.warning(
                "session %r: can't send a verdict (%s) within %gs (REPLY_SEND_TIMEOUT)",
                self.id,
                verdict,
                REPLY_SEND_TIMEOUT,
            )

    async def _recover(self) -> None:
        """The previous owner died: close what it left in flight."""
        session = self.session
        s = session.state
        if not s.running:
            return
        reason = (
            f"recovered by {self.log.node}: the previous owner's lease expired "
            "(its process died or lost Redis)"
        )
        await session.bus.publish(ev.Interrupt(run=s.run, step=s.step, mode="hard", reason=reason))
        await session._close_open_calls(s.run, s.step, f"hard interrupt: {reason}")
        # The agent loop publishes ``interrupted`` at the step boundary and waits.
        session._interrupt = ("hard", reason)

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
                await self.session.view.publish(event)
            self._pending = []

    async def _persist_pending(self) -> None:
        attempt = 0
        while True:
            fresh = [e for e in self._pending if e.seq > self.persist_after]
            try:
                await self.log.append(self.id, fresh, maxlen=self.maxlen)
            except Exception as exc:
                if not _unavailable(exc):
                    raise
                if isinstance(exc, coredis.exceptions.ResponseError):
                    raise
                if not self._outage:
                    self._outage = True
                    # (its own task: the interrupt waits for the relay, which is us)
                    assert self._nursery is not None  # (the relay runs in it)
                    self._nursery.start_soon(self._pause, exc)
                await trio.sleep(_backoff(attempt))
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
            await session.bus.publish(
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
                    if not (isinstance(exc, LeaseLost) or _unavailable(exc)):
                        raise
                    logger.warning("session %r: events not flushed to Redis: %s", self.id, exc)
                    return
            view = self.session.view
            for event in self._pending:
                if event.seq <= view.log.last_seq:
                    continue  # the relay handed it over before it was cancelled
                try:
                    view.publish_nowait(event)
                except (trio.WouldBlock, trio.ClosedResourceError):
                    break  # a full client is closed now: it replays the rest on reconnect
            self._pending = []


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
