"""Server-Sent Events (DESIGN §10): ``GET /sessions/{id}/events``, the same stream as the
WebSocket's in another framing.

- :class:`StreamClient` — a :class:`~.client.Client` whose frames go out as pieces of one
  streamed HTTP response (chunked, by h11): the head sent with the first piece, every
  write within ``send_timeout`` (else the connection is aborted), a ``:`` comment after
  ``heartbeat_interval`` of silence, the peer's leaving watched, the response ended
  with a comment naming why.  The AG-UI stream (:mod:`.agui`) is one too.
- :class:`SSEClient` — our events as SSE messages: one per event, ``id: <seq>``,
  ``event: <type>``, ``data: <the event's JSON>`` (a merged text event carries the seq of
  the last event it covers, as on the WebSocket); ``retry:`` first.  Client-only
  ``error`` events carry no ``id`` (an EventSource keeps the last one).  A replay the log
  cannot give (``Last-Event-ID`` trimmed away, or beyond the log) is told in an ``error``
  message, and the stream goes on from a ``state`` snapshot: an EventSource reconnects
  with the same ``Last-Event-ID`` by itself, so ending the stream would only repeat.
- :func:`serve_events` — the endpoint: query (``after``, ``token``), token and origin,
  the session id, where to start (``Last-Event-ID`` wins over ``?after=``: an
  EventSource reconnects to the URL it was opened with), then
  :meth:`AgentServer.attach <trio_agent.transports.AgentServer.attach>`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
import trio

from .._bus import Subscription
from .._core import events as ev
from .._runtime import Session
from .client import Client, Counters
from .http import HTTPConnection, Refused, Request, seq_param, session_id_param
from .limits import ServerLimits

if TYPE_CHECKING:
    from .server import AgentServer

__all__ = [
    "CONTENT_TYPE",
    "EVENTS_PATH",
    "RETRY_MS",
    "SSEClient",
    "StreamClient",
    "encode_message",
    "serve_events",
    "start_after",
]

EVENTS_PATH: Final = re.compile(r"/sessions/([^/?#]*)/events")
"""The SSE endpoint's path; the group is the session id (percent-encoded)."""

CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"

RETRY_MS: Final = 1000
"""The ``retry:`` an SSE stream starts with: milliseconds an EventSource waits before it
reconnects (browsers default to about 3 s).  One second: a page that was evicted or lost
its connection is back soon, and a thousand pages coming back after a restart spread
over a second of their own timers."""

READ_SIZE: Final = 4096
"""Bytes read at a time while watching for the peer to leave (it sends nothing more)."""


def encode_message(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE message (``data`` is one line: JSON from orjson has no raw newline)."""
    out = b""
    if id is not None:
        out += b"id: " + id.encode() + b"\n"
    if event is not None:
        out += b"event: " + event.encode() + b"\n"
    return out + b"data: " + data + b"\n\n"


def _comment(text: str) -> bytes:
    return b": " + " ".join(text.splitlines()).encode("utf-8") + b"\n\n"


class StreamClient(Client):
    """A client whose frames are pieces of one streamed HTTP response (see the module
    docstring).  ``headers``: extra response headers (CORS)."""

    preamble: bytes = b""
    """What the body starts with, before the first frame."""

    def __init__(
        self,
        http: HTTPConnection,
        counters: Counters,
        limits: ServerLimits,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(counters, limits)
        self.http = http
        self.headers = tuple(headers)
        self.heartbeat = limits.heartbeat_interval
        self.sending = False  # in a write: if cancelled now, the stream may be cut

    async def write(self, data: bytes) -> bool:
        """Send ``data`` as a piece of the body (the head first, once); False (and the
        client ended) if it could not go out within ``send_timeout``."""
        http = self.http
        if self.gone:
            return False
        out = b""
        if not http.started:
            out = http.begin(200, self.headers, CONTENT_TYPE)
            data = self.preamble + data
        out += http.write(data)
        with trio.move_on_after(self.limits.send_timeout) as scope:
            try:
                self.sending = True
                await http.stream.send_all(out)
                self.sending = False  # (left True if cancelled from outside)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.sending = False
                self.end(gone=True)
                return False
        if scope.cancelled_caught:
            # Cut mid-piece: the chunked body is broken, nothing more can follow.
            self.gone = True
            await http.stream.aclose()
            self.end(gone=True)
            return False
        return True

    async def send_heartbeat(self) -> bool:
        return await self.write(b":\n\n")

    async def run(
        self, session: Session, sub: Subscription, snapshot: ev.StateSnapshot | None
    ) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.pump, sub, snapshot)
                nursery.start_soon(self.watch)

    async def watch(self) -> None:
        """End the client once the peer closes its side (it sends nothing after its
        request; anything it does send is read and ignored)."""
        while True:
            try:
                data = await self.http.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.end(gone=True)
                return

    async def flush(self, sub: Subscription) -> None:
        if self.sending:  # a piece was cut short: nothing more can go on this stream
            self.gone = True
            await self.http.stream.aclose()
            return
        await super().flush(sub)

    async def aclose(self) -> None:
        """End the response: a comment naming why (a close decided, else the server
        stopping), then the body's end, within ``close_timeout``."""
        if self.gone or self.sending:
            return
        _, reason = self.close or (0, "server shutting down")
        with trio.CancelScope(shield=True), trio.move_on_after(self.limits.close_timeout):
            if await self.write(_comment(reason)):
                try:
                    await self.http.stream.send_all(self.http.finish())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass


class SSEClient(StreamClient):
    """One EventSource (or any SSE client) of one session."""

    transport = "sse"
    preamble = f"retry: {RETRY_MS}\n".encode()  # (a field of the first message)

    async def send_frame(self, events: list[dict[str, Any]]) -> bool:
        out = bytearray()
        for e in events:
            data = orjson.dumps(e)
            # The session's events (and its snapshot) carry their seq; an error for this
            # client only (session "") carries none, so the last id stands.
            seq = str(e["seq"]) if e.get("session") else None
            out += encode_message(data, event=e["type"], id=seq)
        return await self.write(bytes(out))

    def resume_hint(self, seq: int) -> str:
        return (
            f"reconnect with Last-Event-ID: {seq} (an EventSource does so by itself) "
            f"or ?after={seq} to replay the rest"
        )

    async def cannot_replay(self, code: str, message: str) -> bool:
        await self.send_error(
            code, f"{message}; a state snapshot follows: render it in place of what you had"
        )
        return True


def start_after(request: Request, params: dict[str, str]) -> int | None:
    """Where a stream starts: after the ``Last-Event-ID`` header's seq if there is one
    (an EventSource reconnecting), else after ``?after=``, else None (a snapshot)."""
    ids = request.header("last-event-id")
    if len(ids) > 1:
        raise Refused(400, "more than one Last-Event-ID header")
    if ids and ids[0].strip():
        value = ids[0].strip()
        if re.fullmatch(r"[0-9]{1,18}", value) is None:
            raise Refused(400, f"Last-Event-ID must be a seq (an integer >= 0), got {value!r}")
        return int(value)
    return seq_param("after", params["after"]) if "after" in params else None


async def serve_events(
    server: AgentServer, http: HTTPConnection, request: Request, match: re.Match[str]
) -> None:
    """``GET /sessions/{id}/events`` (see the module docstring)."""
    try:
        params = request.params(("after", "token"))
        # Authentication first: nothing else is said to a client without the token.
        server.access.check(request, params.get("token"))
        session_id = session_id_param(match.group(1))
        after = start_after(request, params)
    except Refused as refused:
        await http.refuse(refused)
        return
    client = SSEClient(http, server.counters, server.limits, server.access.cors_headers(request))
    try:
        await server.attach(client, session_id, after)
    finally:
        await client.aclose()
