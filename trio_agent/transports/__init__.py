"""The transports: a runtime's sessions served to clients over the network, and the
browser page, on one port.

- :mod:`.limits` — :class:`ServerLimits` (every limit a server sets its clients), the
  close codes that name a limit hit (``CLOSE_*``), :data:`DEFAULT_PORT`, and the token
  bucket of the command rate (sans-I/O);
- :mod:`.idle` — :class:`~.idle.IdleSessions`: which sessions a server opened have gone
  idle (sans-I/O), and ``IDLE_CHECKS``;
- :mod:`.http` — what every endpoint on the port shares: the request head read with h11
  (a :class:`~.http.Request`), plain responses, the token and Origin checks
  (:class:`~.http.Access`, with the DNS-rebinding rule), the page, :func:`is_loopback`;
- :mod:`.client` — one client of one session whatever its framing: the pump (one
  bounded subscription, drained in batches, merged, one frame per batch; eviction,
  trimming, draining), its end, the command path — one mechanism for every framing;
- :mod:`.websocket` — the WebSocket endpoint: the upgrade's checks, the handshake, and
  :class:`~.websocket.WebSocketClient` (its framing, the command reader, the close);
- :mod:`.sse` — Server-Sent Events: :class:`~.sse.StreamClient` (a client whose frames
  are pieces of one streamed HTTP response) and :class:`~.sse.SSEClient` (our events as
  SSE messages), ``GET /sessions/{id}/events``;
- :mod:`.rest` — ``POST /sessions/{id}/commands`` and ``GET /sessions/{id}``;
- :mod:`.agui_mapping` — our events as AG-UI events (sans-I/O, the official models);
  :mod:`.agui_runs` — the AG-UI runs a stream can rejoin; :mod:`.agui` — ``POST /agui``
  and ``GET /agui/{threadId}``;
- :mod:`.routes` — the plain-HTTP endpoints as a table (sans-I/O matching);
- :mod:`.server` — :class:`AgentServer` (listen, dispatch each request by its route,
  admit a client of any transport, drain, statistics, idle expiry) and
  :func:`serve_websocket`.

The wire protocols — endpoints, auth, ops, frames, errors, close codes, limits — are
written down in ``docs/protocol.md``, the AG-UI mapping in ``docs/agui.md``.
"""

from .http import is_loopback
from .limits import (
    CLOSE_EVICTED,
    CLOSE_GOING_AWAY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    DEFAULT_PORT,
    ServerLimits,
)
from .server import AgentServer, ServerStatistics, serve_websocket

__all__ = [
    "CLOSE_EVICTED",
    "CLOSE_GOING_AWAY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN_LATER",
    "DEFAULT_PORT",
    "AgentServer",
    "ServerLimits",
    "ServerStatistics",
    "is_loopback",
    "serve_websocket",
]
