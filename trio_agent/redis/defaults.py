"""The named defaults of sessions on Redis, apart so that the command line can show
them without importing coredis (in-memory serving needs no Redis client)."""

from __future__ import annotations

import math
from typing import Final

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "COMMAND_REPLY_TIMEOUT",
    "COMMAND_STREAM_MAXLEN",
    "DEFAULT_BLOCK",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_PREFIX",
    "READ_BATCH",
    "RELAY_CAPACITY",
    "RELAY_STALL_TIMEOUT",
    "REPLY_SEND_TIMEOUT",
    "REPLY_TTL",
    "WRITE_BATCH",
]

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
