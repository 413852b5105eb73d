"""What a server lets its clients do: :class:`ServerLimits`, the close codes that name a
limit hit, the default port, :class:`TokenBucket` (the command rate, sans-I/O) and
:class:`RateLimiter` (a bounded set of buckets, one per key: the HTTP command rate).

Every limit, when hit, is named in the ``error`` event or the close reason the client
gets; ``docs/protocol.md`` lists them.  ``trio-agent serve`` makes a flag of every field
of :class:`ServerLimits`, its help the first sentence of the field's docstring
(:mod:`trio_agent.cli.serve`): a new limit is documented once, here.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Final

import attrs

from .._bus import DEFAULT_CAPACITY, DEFAULT_STALL_TIMEOUT

__all__ = [
    "CLOSE_EVICTED",
    "CLOSE_GOING_AWAY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN_LATER",
    "DEFAULT_PORT",
    "MAX_CLOSE_REASON",
    "RATE_KEYS",
    "RateLimiter",
    "ServerLimits",
    "SessionRefused",
    "TokenBucket",
]

DEFAULT_PORT: Final = 8765

CLOSE_GOING_AWAY: Final = 1001
"""The server is shutting down (or the session closed): reconnect later."""
CLOSE_EVICTED: Final = 1008
"""Policy violation: the client stopped reading (evicted), or asked for a replay the
log cannot give (``after`` beyond the log, or trimmed)."""
CLOSE_TOO_BIG: Final = 1009
"""A frame larger than ``ServerLimits.max_message_size`` (sent by trio-websocket)."""
CLOSE_TRY_AGAIN_LATER: Final = 1013
"""``max_connections`` or ``max_sessions`` was reached."""

MAX_CLOSE_REASON: Final = 123
"""Bytes of a close reason (RFC 6455 §5.5.1: 125 bytes of payload minus the code); a
longer reason is cut, ending in ``...``."""


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"ServerLimits.{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen(kw_only=True)
class ServerLimits:
    """What one server lets its clients do.  Every limit, when hit, is named in the
    ``error`` event or close reason the client gets (docs/protocol.md lists them)."""

    max_frame_size: int = attrs.field(default=64 * 1024, validator=_positive)
    """Characters in one client frame; a longer one gets ``error`` ``frame_too_large``
    and is dropped, the connection carries on.  A command is a small JSON object; the
    largest legitimate one is a user message, and 64 KiB is a long one."""

    max_message_size: int = attrs.field(default=1024 * 1024, validator=_positive)
    """Characters trio-websocket will assemble from one client message before it closes
    the connection with 1009: the memory one client can make the server hold for a
    single frame.  Between ``max_frame_size`` and this, a frame is refused politely."""

    max_connections: int = attrs.field(default=256, validator=_positive)
    """Clients at once (WebSockets, SSE and AG-UI streams), over all sessions.  One
    more is accepted, told ``max_connections`` (error event, close 1013; over HTTP, 503
    or an ``error`` message), and closed.  Each client costs two tasks, a subscription
    and a socket: 256 is far more than one user opens."""

    max_sessions: int = attrs.field(default=1_000, validator=_positive)
    """Sessions the server will hold in its runtime; a client asking for a new session
    beyond this gets ``max_sessions`` (close 1013).  A session keeps its log in
    memory, so this bounds what strangers with the token can make the server keep."""

    session_idle_timeout: float = attrs.field(default=900.0, validator=_positive)
    """Seconds a session this server opened is kept with no client connected and no
    run going or paused; then it is closed (``Session.aclose``) and, in memory, its log
    is gone: a client that comes back later starts a new session (and one reconnecting
    with ``?after=`` is told ``bad_after``).  With ``--redis`` the log stays in Redis and
    the next client's process rebuilds the session from it.  Without this a public
    server would fill ``max_sessions`` with abandoned conversations for good; fifteen
    minutes outlasts a closed laptop lid over a coffee break.  Checked every quarter
    of it (``IDLE_CHECKS``).  Sessions opened by the embedding program are its own to
    close."""

    command_rate: float = attrs.field(default=20.0, validator=_positive)
    """Commands per second one connection may send, on average (a token bucket); a
    command over the rate gets ``error`` ``rate_limited`` and is dropped.  People type
    far slower; a runaway script is cut off before it floods the session log.  Over
    HTTP (``POST /sessions/{id}/commands``, ``POST /agui``) the bucket is per remote
    address and session instead (HTTP 429): one page of one session, as a WebSocket
    is."""

    command_burst: int = attrs.field(default=40, validator=_positive)
    """The bucket's size: commands one connection may send at once."""

    subscriber_capacity: int = attrs.field(default=DEFAULT_CAPACITY, validator=_positive)
    """Events each client's subscription buffers (see ``DEFAULT_CAPACITY``): the pump
    drains all of them into one frame whenever it gets to run."""

    stall_timeout: float = attrs.field(default=DEFAULT_STALL_TIMEOUT, validator=_positive)
    """Seconds a client whose buffer is full may hold the run back before it is
    evicted (``error`` ``evicted``, close 1008); it may reconnect with ``?after=``."""

    send_timeout: float = attrs.field(default=30.0, validator=_positive)
    """Seconds one frame may take to go out before the client is taken for gone and its
    TCP connection is aborted (a close frame could not get through either)."""

    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds a new connection has to send its request head."""

    close_timeout: float = attrs.field(default=2.0, validator=_positive)
    """Seconds the closing handshake may take before the socket is closed anyway."""

    max_request_head: int = attrs.field(default=16 * 1024, validator=_positive)
    """Bytes of request line and headers (h11's ``max_incomplete_event_size``)."""

    heartbeat_interval: float = attrs.field(default=15.0, validator=_positive)
    """Seconds an event stream (SSE, AG-UI) may stay silent before the server sends a
    ``:`` comment: proxies and load balancers close a response idle for 30 to 60 s,
    and a dead peer is found by the write failing.  15 s is under every common idle
    timeout and costs a few bytes."""


class SessionRefused(Exception):
    """A session could not be had for a client: ``code`` is ``max_sessions`` or
    ``shutting_down``; the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; sans-I/O (time is passed in).
    One per connection: ``take(now)`` is False for a command over the rate."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


RATE_KEYS: Final = 4096
"""Buckets a :class:`RateLimiter` keeps (the least recently used is forgotten first,
as if full again): one per remote address and session that sent commands lately.  A
bucket is a few dozen bytes; forgetting one only lets that client start a new burst."""


class RateLimiter:
    """One :class:`TokenBucket` per key (``rate``, ``burst``), at most ``max_keys`` of
    them, least recently used forgotten first; sans-I/O (time is passed in)."""

    def __init__(self, rate: float, burst: int, max_keys: int = RATE_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def take(self, key: Hashable, now: float) -> bool:
        """False when ``key`` is over the rate."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)
