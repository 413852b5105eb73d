"""The WebSocket transport (DESIGN §6) and the browser page, on one port.

Ownership: :meth:`AgentServer.serve` owns a nursery in which ``trio.serve_listeners``
runs one handler task per TCP connection.  Each handler owns a nursery of its own for
trio-websocket's reader task and, once the WebSocket is accepted, for the client's two
tasks: the *pump* (a UI consumer of DESIGN §1: one bounded subscription, drained in
batches, one frame per batch) and the *reader* (client commands to ``Session.send`` /
``interrupt`` / ``resume`` / ``cancel``).  Cancelling ``serve`` closes every client
with code 1001 and joins every task; it never touches a run — runs belong to the
runtime's nursery, and a client that leaves does not cancel its run.

HTTP is parsed by h11 and WebSocket by wsproto (through trio-websocket): the request
head is read with h11, which decides between the page (a plain ``GET``), a refusal
(a plain HTTP response) and a WebSocket upgrade; for an upgrade, the bytes already read
are replayed into ``trio_websocket.wrap_server_stream``, which does the handshake.
No HTTP is parsed by hand.

The protocol — endpoint, auth, ops, frames, errors, close codes, limits — is written
down in ``docs/protocol.md``.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import hmac
import inspect
import ipaddress
import logging
import math
import os
import re
import signal
import sys
import textwrap
import time
import typing
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Sequence
from importlib import resources
from typing import Any, Final

import attrs
import h11
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection

from . import events as ev
from ._bus import DEFAULT_CAPACITY, DEFAULT_STALL_TIMEOUT, Subscription
from ._core import wire
from ._runtime import Runtime, Session, validate_session_id
from .errors import (
    CommandError,
    LogTrimmed,
    SessionLimitError,
    SessionLogError,
    SessionStateError,
    SubscriberEvicted,
)

__all__ = [
    "CLOSE_EVICTED",
    "CLOSE_GOING_AWAY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN_LATER",
    "DEFAULT_PORT",
    "AgentServer",
    "ServerLimits",
    "ServerStatistics",
    "add_limit_arguments",
    "add_serve_arguments",
    "limits_from_args",
    "serve_command",
    "serve_websocket",
]

logger = logging.getLogger("trio_agent.server")

DEFAULT_PORT: Final = 8765

IDLE_CHECKS: Final = 4
"""Times per ``session_idle_timeout`` the server looks for idle sessions: one is closed
between one and one and a quarter timeouts after it fell idle, for a scan of every session
four times per timeout."""

CLOSE_GOING_AWAY: Final = 1001
"""The server is shutting down (or the session closed): reconnect later."""
CLOSE_EVICTED: Final = 1008
"""Policy violation: the client stopped reading (evicted), or asked for a replay the
log cannot give (``after`` beyond the log, or trimmed)."""
CLOSE_TOO_BIG: Final = 1009
"""A frame larger than ``ServerLimits.max_message_size`` (sent by trio-websocket)."""
CLOSE_TRY_AGAIN_LATER: Final = 1013
"""``max_connections`` or ``max_sessions`` was reached."""

_MAX_CLOSE_REASON: Final = 123  # bytes, RFC 6455 §5.5.1 (125 minus the code)


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
    """WebSocket clients at once, over all sessions.  One more is accepted, told
    ``max_connections`` (error event, close 1013), and closed.  Each client costs two
    tasks, a subscription and a socket: 256 is far more than one user opens."""

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
    far slower; a runaway script is cut off before it floods the session log."""

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


@attrs.frozen(slots=True)
class ServerStatistics:
    """A server's counters, as ``AgentServer.statistics()`` returns them."""

    clients: int
    """WebSocket clients connected now."""
    clients_by_session: dict[str, int]
    frames_sent: int
    events_sent: int
    """Events delivered, counting each merged token separately."""
    events_merged: int
    """Events folded into the one before them in a frame (see ``_wire.merge_events``)."""
    errors_sent: int
    """Client-only ``error`` events."""
    http_requests: int


class IdleSessions:
    """Which of the sessions a server opened have been idle for ``timeout`` seconds:
    no client, no run going or paused, no event.  Sans-I/O: the server tells it when
    it opened a session and when a client left, and asks it now and then
    (``IDLE_CHECKS`` times per timeout) which to close."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: dict[Session, tuple[int, float]] = {}  # last seq seen, last active
        self._left: dict[Session, float] = {}  # when a client last left it

    def __contains__(self, session: object) -> bool:
        return session in self._seen

    def add(self, session: Session, now: float) -> None:
        self._seen.setdefault(session, (session.state.seq, now))

    def left(self, session: Session, now: float) -> None:
        if session in self._seen:
            self._left[session] = now

    def expired(self, now: float, watched: Collection[Session | None]) -> list[Session]:
        """The sessions to close now (forgotten here as they are returned)."""
        out: list[Session] = []
        for session, (seq, since) in list(self._seen.items()):
            left = self._left.pop(session, since)
            if session.closed:
                del self._seen[session]
                continue
            # (the working bus: on an owner the view lags it by a Redis round trip)
            state = session.state
            if (
                session in watched
                or state.running
                or state.status == "interrupted"
                or state.seq != seq  # something happened since the last look
            ):
                since = now
            since = max(since, left)  # a client came and went between two looks
            if now - since >= self.timeout:
                del self._seen[session]
                out.append(session)
            else:
                self._seen[session] = (state.seq, since)
        return out


class _ReplayStream(trio.abc.Stream):
    """A stream whose first bytes received are ``prefix`` (read already, by h11)."""

    def __init__(self, prefix: bytes, stream: trio.abc.Stream) -> None:
        self._prefix = prefix
        self.stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


class _TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; sans-I/O (time is passed in)."""

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


class _Refused(Exception):
    """A request refused before the upgrade, with a plain HTTP response."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = tuple(headers)


class _Client:
    """One accepted WebSocket client of one session."""

    def __init__(self, ws: WebSocketConnection, stream: trio.abc.Stream) -> None:
        self.ws = ws
        self.session: Session | None = None  # set once attached
        self.stream = stream  # the TCP stream, to abort a connection that can't close
        self.scope = trio.CancelScope()
        self.close: tuple[int, str] | None = None
        self.gone = False  # the socket is closed or broken: no close frame to send
        self.sending = False  # in send_message: if cancelled now, the stream may be cut
        self.through: int | None = None  # draining: close 1001 once this seq is sent
        self.waiting: trio.CancelScope | None = None  # around the pump's wait for events

    def end(self, code: int | None = None, reason: str = "", *, gone: bool = False) -> None:
        """End this client: close with ``code`` (unless a close was decided already),
        or, ``gone``, with no close frame (the peer is gone)."""
        if gone:
            self.gone = True
        elif self.close is None and code is not None:
            self.close = (code, reason)
        self.scope.cancel()

    def drain(self, through: int) -> None:
        """Close with 1001 once every event up to seq ``through`` has gone out.  A pump
        waiting for events is woken; one sending a frame finishes it first (a cancel
        now would cut the frame).  Synchronous, not a checkpoint."""
        self.through = through
        if self.waiting is not None:
            self.waiting.cancel()


_SESSION_PATH: Final = re.compile(r"/sessions/([^/?#]*)")
_AFTER: Final = re.compile(r"[0-9]{1,18}")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

_PAGE_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}

_PAGE_HEADERS: Final = (
    (
        "content-security-policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)


def _load_page() -> dict[str, bytes]:
    web = resources.files("trio_agent") / "web"
    out: dict[str, bytes] = {}
    for name, _ in _PAGE_FILES.values():
        try:
            out[name] = (web / name).read_bytes()
        except FileNotFoundError:  # pragma: no cover - a broken install
            logger.warning("the page file web/%s is missing", name)
    return out


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _truncate_reason(reason: str) -> str:
    data = reason.encode("utf-8")
    if len(data) <= _MAX_CLOSE_REASON:
        return reason
    return data[: _MAX_CLOSE_REASON - 3].decode("utf-8", "ignore") + "..."


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in headers if k == name]


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` is reachable only from this machine."""
    if host.strip("[]") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AgentServer:
    """Serves a runtime's sessions over WebSocket, and the page, on one port.

    ``port = await nursery.start(server.serve, host, port)``; cancel to stop (clients
    get close code 1001).  See :func:`serve_websocket` for the one-call form.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        token: str | None = None,
        allow_origins: Iterable[str] = (),
        limits: ServerLimits = ServerLimits(),
    ) -> None:
        if token is not None and not token:
            raise ValueError("token must be a non-empty string or None")
        self.runtime = runtime
        self.limits = limits
        self._token = None if token is None else _digest(token)
        self._origins = frozenset(o.rstrip("/").lower() for o in allow_origins)
        self._page = _load_page()
        self._clients: set[_Client] = set()
        self._clients_left = trio.lowlevel.ParkingLot()  # drain() waits on it
        self._stopping = False
        self._idle = IdleSessions(limits.session_idle_timeout)  # those this server opened
        self._reserved = 0  # clients past the checks, being accepted or connected
        self._bound_host = ""
        self._frames = self._events = self._merged = self._errors = self._http = 0

    async def drain(self, timeout: float) -> None:
        """Stop gracefully: each of this server's clients gets every event published
        so far for it, then close code 1001 "server shutting down"; a client arriving
        from now on gets 1001 at once.  Nothing else is touched: the sessions stay
        open, their runs go on, and their other subscribers (the embedding program's
        own) keep receiving.  Waits (at most ``timeout`` seconds) until every client is
        gone.  Cancel ``serve`` after."""
        self._stopping = True
        for client in self._clients:
            if client.session is not None:
                client.drain(client.session.log.last_seq)
        with trio.move_on_after(timeout):
            while self._clients:
                await self._clients_left.park()

    def statistics(self) -> ServerStatistics:
        by_session: dict[str, int] = {}
        for c in self._clients:
            if c.session is not None:
                by_session[c.session.id] = by_session.get(c.session.id, 0) + 1
        return ServerStatistics(
            clients=len(self._clients),
            clients_by_session=by_session,
            frames_sent=self._frames,
            events_sent=self._events,
            events_merged=self._merged,
            errors_sent=self._errors,
            http_requests=self._http,
        )

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` until cancelled; ``task_status.started(port)`` with
        the port bound (the kernel's pick when ``port`` is 0: then only the first
        address ``host`` resolves to is served, so that there is one port)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        if port == 0 and len(listeners) > 1:
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        self._bound_host = host
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle_stream, listeners)
            nursery.start_soon(self._expire_idle)
            task_status.started(bound)

    async def _expire_idle(self) -> None:
        """Close the sessions this server opened once they have had no client and no
        run (going or paused) for ``session_idle_timeout``."""
        while True:
            await trio.sleep(self.limits.session_idle_timeout / IDLE_CHECKS)
            watched = {c.session for c in self._clients}
            for session in self._idle.expired(trio.current_time(), watched):
                # Closed in the same step as the decision: a client arriving from now
                # on finds it closed and gets a new session.
                session.close_nowait()

    # ---- one TCP connection -------------------------------------------------------------

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self._dispatch(stream, nursery)
                finally:
                    nursery.cancel_scope.cancel()  # trio-websocket's reader task
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
            pass  # the peer went away
        except Exception:
            logger.exception("error serving a connection")
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_head(
        self, stream: trio.abc.Stream
    ) -> tuple[h11.Connection, h11.Request, bytes] | None:
        """The request head (by h11) and every byte read so far; None if the peer
        closed or went quiet first."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_request_head)
        raw = bytearray()
        with trio.move_on_after(self.limits.handshake_timeout):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    await self._respond(stream, conn, exc.error_status_hint, f"bad request: {exc}")
                    return None
                if event is h11.NEED_DATA:
                    data = bytes(await stream.receive_some(16384))
                    raw += data
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    return conn, event, bytes(raw)
                return None  # ConnectionClosed before a request
        return None

    async def _dispatch(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        head = await self._read_head(stream)
        if head is None:
            return
        conn, request, raw = head
        headers = request.headers
        upgrade = any("websocket" in v.lower() for v in _header(headers, b"upgrade"))
        target = request.target.decode("latin-1")
        url = urllib.parse.urlsplit(target)
        if not upgrade:
            self._http += 1
            await self._serve_http(stream, conn, request, url.path)
            return
        try:
            session_id, after = self._check_upgrade(request, url)
        except _Refused as refused:
            await self._respond(stream, conn, refused.status, str(refused), refused.headers)
            return
        ws_request = await trio_websocket.wrap_server_stream(
            nursery,
            _ReplayStream(raw, stream),
            message_queue_size=1,
            max_message_size=self.limits.max_message_size,
        )
        ws = await ws_request.accept()
        client = _Client(ws, stream)
        try:
            await self._serve_client(client, session_id, after)
        finally:
            await self._close_client(client)

    async def _respond(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        status: int,
        text: str | bytes,
        headers: Sequence[tuple[str, str]] = (),
        content_type: str = "text/plain; charset=utf-8",
        head_only: bool = False,
    ) -> None:
        body = text.encode("utf-8") if isinstance(text, str) else text
        if isinstance(text, str):
            body += b"\n"
        all_headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            ("connection", "close"),
            *headers,
        ]
        try:
            data = conn.send(h11.Response(status_code=status, headers=all_headers))
            if body and not head_only:
                data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(self.limits.close_timeout):
            await stream.send_all(data)

    async def _serve_http(
        self, stream: trio.abc.Stream, conn: h11.Connection, request: h11.Request, path: str
    ) -> None:
        method = request.method
        if method not in (b"GET", b"HEAD"):
            await self._respond(
                stream,
                conn,
                405,
                f"method {method.decode('latin-1')} not allowed",
                [("allow", "GET, HEAD")],
            )
            return
        if _SESSION_PATH.fullmatch(path):
            await self._respond(
                stream,
                conn,
                426,
                "this is a WebSocket endpoint: connect with ws://",
                [("upgrade", "websocket")],
            )
            return
        page = _PAGE_FILES.get(path)
        if page is None or page[0] not in self._page:
            await self._respond(
                stream, conn, 404, f"not found: {path}", head_only=method == b"HEAD"
            )
            return
        name, content_type = page
        await self._respond(
            stream,
            conn,
            200,
            self._page[name],
            _PAGE_HEADERS,
            content_type,
            head_only=method == b"HEAD",
        )

    # ---- the checks before the upgrade ----------------------------------------------------

    def _check_upgrade(
        self, request: h11.Request, url: urllib.parse.SplitResult
    ) -> tuple[str, int | None]:
        """The session id and ``after`` of an upgrade request, or :class:`_Refused`."""
        headers = request.headers
        if request.method != b"GET":
            raise _Refused(405, "a WebSocket upgrade is a GET", [("allow", "GET")])
        keys = _header(headers, b"sec-websocket-key")
        versions = _header(headers, b"sec-websocket-version")
        if len(keys) != 1 or versions != ["13"]:
            raise _Refused(
                426,
                "bad WebSocket upgrade: one Sec-WebSocket-Key and Sec-WebSocket-Version: 13 "
                "are required",
                [("sec-websocket-version", "13")],
            )
        match = _SESSION_PATH.fullmatch(url.path)
        if match is None:
            raise _Refused(404, f"not found: {url.path} (the endpoint is /sessions/{{id}})")
        try:
            query = urllib.parse.parse_qs(
                url.query, keep_blank_values=True, strict_parsing=False, max_num_fields=8
            )
        except ValueError:
            raise _Refused(400, "too many query parameters") from None
        for name, values in query.items():
            if name not in ("after", "token"):
                raise _Refused(400, f"unknown query parameter {name!r}; expected after or token")
            if len(values) > 1:
                raise _Refused(400, f"query parameter {name!r} given {len(values)} times")
        # Authentication first: nothing else is said to a client without the token.
        self._check_token(headers, query.get("token", [None])[0])
        self._check_origin(headers)
        try:
            session_id = validate_session_id(urllib.parse.unquote(match.group(1)))
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        after: int | None = None
        if "after" in query:
            text = query["after"][0]
            if _AFTER.fullmatch(text) is None:
                raise _Refused(
                    400, f"query parameter 'after' must be a seq (an integer >= 0), got {text!r}"
                )
            after = int(text)
        return session_id, after

    def _check_token(self, headers: Sequence[tuple[bytes, bytes]], query_token: str | None) -> None:
        if self._token is None:
            return
        given = query_token
        for value in _header(headers, b"authorization"):
            scheme, _, credentials = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                given = credentials.strip()
        # Compare digests: constant time, and no length to leak.
        if given is None or not hmac.compare_digest(_digest(given), self._token):
            raise _Refused(
                401,
                "unauthorized: a valid token is required (?token= or Authorization: Bearer)",
                [("www-authenticate", 'Bearer realm="trio-agent"')],
            )

    def _check_origin(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """A browser's ``Origin`` must be allowed: listed, or this server's own page
        (Origin == http://Host).  No Origin: not a browser, judged by its token alone."""
        origins = _header(headers, b"origin")
        if not origins:
            return
        if len(origins) > 1:
            raise _Refused(403, "forbidden: more than one Origin header")
        origin = origins[0].strip().rstrip("/").lower()
        if origin in self._origins:
            return
        hosts = _header(headers, b"host")
        host = hosts[0].strip().lower() if len(hosts) == 1 else ""
        if host and origin in (f"http://{host}", f"https://{host}") and self._host_trusted(host):
            return
        raise _Refused(403, f"forbidden: origin {origins[0]!r} is not allowed (see --allow-origin)")

    def _host_trusted(self, host: str) -> bool:
        """Whether a same-origin page at ``host`` is this server's own.  With a token,
        any: the token is the proof.  Without one, only a loopback name or the host the
        server was bound to, so that a DNS-rebinding page (evil.example resolving to
        127.0.0.1 — its Origin and Host agree) cannot drive the sessions."""
        if self._token is not None:
            return True
        name = urllib.parse.urlsplit(f"//{host}").hostname or ""
        return is_loopback(name) or name == self._bound_host.lower()

    # ---- one WebSocket client -----------------------------------------------------------

    async def _flush(self, client: _Client, sub: Subscription) -> None:
        """Send every event waiting in ``sub`` (no waiting for more)."""
        if client.sending:  # a frame was cut short: nothing more can go on this stream
            client.gone = True
            await client.stream.aclose()
            return
        while True:
            try:
                batch = sub.receive_batch_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, SubscriberEvicted, LogTrimmed):
                return
            frame, merged = wire.encode_frame(batch)
            if not await self._send(client, frame):
                return
            self._frames += 1
            self._events += len(batch)
            self._merged += merged

    async def _close_client(self, client: _Client) -> None:
        """Send the close frame (1001 if nothing else was decided: the server is
        stopping), bounded by ``close_timeout``; abort the socket if it can't go."""
        if client.gone or client.ws.closed is not None:
            return
        if client.sending:  # cancelled mid-frame: a close frame would corrupt the stream
            with trio.CancelScope(shield=True):
                await client.stream.aclose()
            return
        code, reason = client.close or (CLOSE_GOING_AWAY, "server shutting down")
        with trio.CancelScope(shield=True), trio.move_on_after(self.limits.close_timeout) as scope:
            try:
                await client.ws.aclose(code, _truncate_reason(reason))
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True):
                await client.stream.aclose()

    async def _refuse_client(self, client: _Client, code: str, message: str) -> None:
        """Tell an accepted client why it can't go on; the close frame follows."""
        client.close = (
            CLOSE_TRY_AGAIN_LATER if code.startswith("max_") else CLOSE_EVICTED,
            f"{code}: {message}",
        )
        await self._send_error(client, code, message)

    async def _serve_client(self, client: _Client, session_id: str, after: int | None) -> None:
        limits = self.limits
        if self._stopping:  # drain() began: no new client (nor session)
            client.close = (CLOSE_GOING_AWAY, "server shutting down")
            return
        if self._reserved >= limits.max_connections:
            await self._refuse_client(
                client,
                "max_connections",
                f"the server already has {limits.max_connections} clients (max_connections)",
            )
            return
        self._reserved += 1
        try:
            session = self.runtime.get_session(session_id)
            if session is None or session.closed:
                # (a session closing under this id is replaced one for one: no new place)
                if session is None and len(self.runtime.sessions) >= limits.max_sessions:
                    await self._refuse_client(
                        client,
                        "max_sessions",
                        f"can't open session {session_id!r}: the server already holds "
                        f"{limits.max_sessions} sessions (max_sessions)",
                    )
                    return
                try:
                    session = await self.runtime.open_session(session_id)
                    self._idle.add(session, trio.current_time())
                except SessionLimitError as exc:
                    await self._refuse_client(client, "max_sessions", str(exc))
                    return
                except trio.ClosedResourceError:
                    client.close = (CLOSE_GOING_AWAY, "server shutting down")
                    return
            if self._stopping:  # drain() began while the session was being opened
                client.close = (CLOSE_GOING_AWAY, "server shutting down")
                return
            client.session = session
            try:
                sub = session.open_subscription(
                    after=after,
                    capacity=limits.subscriber_capacity,
                    policy="block",
                    stall_timeout=limits.stall_timeout,
                )
            except LogTrimmed as exc:
                await self._refuse_client(client, "log_trimmed", f"{exc}; reconnect without after")
                return
            except ValueError as exc:
                await self._refuse_client(client, "bad_after", f"{exc}; reconnect without after")
                return
            except trio.ClosedResourceError:
                client.close = (CLOSE_GOING_AWAY, "session closed")
                return
            # Same synchronous step as the subscription: the snapshot's seq is exactly
            # the seq after which the subscription's live events start.
            snapshot = None if after is not None else _snapshot(session)
            self._clients.add(client)
            try:
                with client.scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, sub, snapshot)
                        nursery.start_soon(self._read_commands, client, session)
            finally:
                if client.close is None and not client.gone:
                    # Cancelled from outside (the server is stopping): deliver what
                    # was published for this client before the close frame.
                    with trio.CancelScope(shield=True), trio.move_on_after(limits.close_timeout):
                        await self._flush(client, sub)
                sub.close()
                self._clients.discard(client)
                self._clients_left.unpark_all()
                self._idle.left(session, trio.current_time())
        finally:
            self._reserved -= 1

    async def _send(self, client: _Client, frame: str) -> bool:
        """Send one frame; False (and the client ended) if it could not go out."""
        with trio.move_on_after(self.limits.send_timeout) as scope:
            try:
                client.sending = True
                await client.ws.send_message(frame)
                client.sending = False  # (left True if cancelled from outside)
            except ConnectionClosed:
                client.end(gone=True)
                return False
        if scope.cancelled_caught:
            # Cancelled mid-frame: the byte stream is cut, no close frame can follow.
            client.gone = True
            await client.stream.aclose()
            client.end(gone=True)
            return False
        return True

    async def _send_error(self, client: _Client, code: str, message: str) -> None:
        self._errors += 1
        await self._send(client, "[" + wire.client_error(code, message).to_wire().decode() + "]")

    async def _pump(
        self, client: _Client, sub: Subscription, snapshot: ev.StateSnapshot | None
    ) -> None:
        """The UI consumer: wait for events, drain all that are waiting, send them as
        one frame (merged), repeat."""
        if snapshot is not None:
            if not await self._send(client, "[" + snapshot.to_wire().decode() + "]"):
                return
            self._frames += 1
        while True:
            if client.through is not None and sub.last_seq >= client.through:
                client.end(CLOSE_GOING_AWAY, "server shutting down")  # drained
                return
            try:
                batch = await self._next_batch(client, sub)
            except SubscriberEvicted as exc:
                message = (
                    f"evicted: {exc.reason}; reconnect with ?after={exc.last_seq} to replay "
                    "the rest"
                )
                client.close = (CLOSE_EVICTED, message)
                await self._send_error(client, "evicted", message)
                client.end()
                return
            except LogTrimmed as exc:
                message = f"{exc}; reconnect without after"
                client.close = (CLOSE_EVICTED, f"log_trimmed: {message}")
                await self._send_error(client, "log_trimmed", message)
                client.end()
                return
            except trio.EndOfChannel:
                reason = "server shutting down" if self._stopping else "session closed"
                client.end(CLOSE_GOING_AWAY, reason)
                return
            if batch is None:
                continue  # woken by drain(): the check above ends the client
            frame, merged = wire.encode_frame(batch)
            if not await self._send(client, frame):
                return
            self._frames += 1
            self._events += len(batch)
            self._merged += merged

    async def _next_batch(self, client: _Client, sub: Subscription) -> list[ev.Event] | None:
        """Wait for events and take every one waiting; None if ``drain()`` woke the
        wait (a cancelled ``receive_batch`` takes nothing, so nothing is lost)."""
        with trio.CancelScope() as client.waiting:
            try:
                # At most a subscriber's capacity per frame: a replay of a long log
                # goes out in frames of bounded size.
                return await sub.receive_batch(self.limits.subscriber_capacity)
            finally:
                client.waiting = None
        return None

    async def _read_commands(self, client: _Client, session: Session) -> None:
        limits = self.limits
        bucket = _TokenBucket(limits.command_rate, limits.command_burst, trio.current_time())
        ws = client.ws
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                client.end(gone=True)
                return
            if not bucket.take(trio.current_time()):
                await self._send_error(
                    client,
                    "rate_limited",
                    f"command dropped: more than {limits.command_rate:g} commands/s "
                    f"(burst {limits.command_burst}) on this connection (command_rate)",
                )
                continue
            if len(message) > limits.max_frame_size:
                await self._send_error(
                    client,
                    "frame_too_large",
                    f"frame dropped: {len(message)} characters is over the limit of "
                    f"{limits.max_frame_size} (max_frame_size)",
                )
                continue
            try:
                command = wire.parse_command(message)
            except CommandError as exc:
                await self._send_error(client, exc.code, str(exc))
                continue
            try:
                await session.apply(command)
            except SessionStateError as exc:
                await self._send_error(client, "bad_state", str(exc))
            except SessionLogError as exc:
                await self._send_error(client, "log_unavailable", str(exc))
            except (ValueError, TypeError) as exc:
                await self._send_error(client, "bad_command", str(exc))
            except trio.ClosedResourceError:
                await self._send_error(client, "shutting_down", "the session is closing")


def _snapshot(session: Session) -> ev.StateSnapshot:
    state = session.state  # the state of what subscribers see
    return ev.StateSnapshot(
        session=session.id,
        run=state.run,
        step=state.step,
        seq=state.seq,
        ts=time.time(),
        state=state.to_dict(),
    )


async def serve_websocket(
    runtime: Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    allow_origins: Iterable[str] = (),
    limits: ServerLimits = ServerLimits(),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``runtime``'s sessions at ``ws://HOST:PORT/sessions/{id}`` and the page at
    ``http://HOST:PORT/`` until cancelled.

    ``port = await nursery.start(partial(serve_websocket, runtime, port=0))`` returns
    once listening, with the port bound.  ``token``: required from every WebSocket
    client (``?token=`` or ``Authorization: Bearer``).  ``allow_origins``: browser
    origins allowed besides the server's own page.
    """
    server = AgentServer(runtime, token=token, allow_origins=allow_origins, limits=limits)
    await server.serve(host, port, task_status=task_status)


# ---- the command line -----------------------------------------------------------------------

SHUTDOWN_GRACE: Final = 5.0
"""Seconds ``serve`` gives running sessions to end ``cancelled`` on SIGINT/SIGTERM
before the clients are closed (1001) and the runtime is left."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-agent serve`` besides ``--model`` and ``--base-url``."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; anything beyond loopback needs --token)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default: {DEFAULT_PORT}; 0: any free)",
    )
    parser.add_argument(
        "--token",
        default=None,
        metavar="T",
        help="bearer token every WebSocket client must present (?token= or Authorization); "
        "default: $TRIO_AGENT_TOKEN",
    )
    parser.add_argument(
        "--allow-origin",
        dest="allow_origins",
        action="append",
        default=[],
        metavar="O",
        help="a browser origin (scheme://host[:port]) allowed besides the server's own page; "
        "repeatable",
    )
    from ._redis_cli import add_redis_arguments

    add_redis_arguments(parser)
    add_limit_arguments(parser)


@functools.cache
def _limit_docs() -> dict[str, str]:
    """The docstring under each ``ServerLimits`` field, read from the source as
    documentation tools read it (one text, in one place); empty if the source is not
    installed."""
    try:
        source = textwrap.dedent(inspect.getsource(ServerLimits))
    except (OSError, TypeError):  # pragma: no cover - an install without sources
        return {}
    (cls,) = ast.parse(source).body
    assert isinstance(cls, ast.ClassDef)
    docs: dict[str, str] = {}
    for stmt, following in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(following.value.value.split())
    return docs


def _limit_help(name: str, default: float) -> str:
    """A flag's help: the first sentence of the field's docstring (in the style of the
    other options: lower case, no full stop), and the default."""
    doc = _limit_docs().get(name, f"ServerLimits.{name}")
    first = re.split(r"(?<=\.) (?=[A-Z(])", doc, maxsplit=1)[0].replace("``", "").rstrip(".")
    word = first.split(" ", 1)[0]
    if word[1:].islower():  # (not "WebSocket")
        first = word.lower() + first[len(word) :]
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{first} (default: {shown})".replace("%", "%%")


def _limit_type(name: str, kind: type[int] | type[float]) -> Callable[[str], float]:
    """The argparse ``type`` of the flag of limit ``name``: the number, checked by
    ``ServerLimits``' own validators, so that argparse names the flag and exits 2."""
    expected = "an integer" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            changes: dict[str, Any] = {name: value}
            attrs.evolve(ServerLimits(), **changes)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag for every ``ServerLimits`` field (``max_connections``:
    ``--max-connections N``), made from the fields themselves: a new limit gets its
    flag, with its docstring's first sentence and its default as the help."""
    group = parser.add_argument_group(
        "limits",
        "what the server lets its clients do; a client that hits one is told its name "
        "(docs/protocol.md)",
    )
    defaults = ServerLimits()
    hints = typing.get_type_hints(ServerLimits)
    for field in attrs.fields(ServerLimits):
        kind = hints[field.name]
        if kind is not int and kind is not float:
            raise TypeError(f"ServerLimits.{field.name}: no command-line flag for {kind!r}")
        default = getattr(defaults, field.name)
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_limit_type(field.name, kind),
            default=default,
            metavar="SECONDS" if field.name.endswith("_timeout") else "N",
            help=_limit_help(field.name, default),
        )


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The ``ServerLimits`` that the flags of :func:`add_limit_arguments` ask for (the
    default for a field ``args`` lacks)."""
    given: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in attrs.fields(ServerLimits) if hasattr(args, f.name)
    }
    return attrs.evolve(ServerLimits(), **given)


def serve_command(args: argparse.Namespace) -> int:
    """``trio-agent serve``: run until SIGINT/SIGTERM.  Returns the exit status."""
    from .models import from_spec
    from .tools import DEMO_TOOLS

    token = args.token if args.token is not None else os.environ.get("TRIO_AGENT_TOKEN") or None
    if not is_loopback(args.host) and not token:
        print(
            f"trio-agent serve: refusing to listen on {args.host!r} without a token: anyone "
            "who can reach it could drive the agent.  Pass --token (or set "
            "$TRIO_AGENT_TOKEN), or listen on 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    try:
        model = from_spec(args.model, base_url=getattr(args, "base_url", None))
    except (ValueError, OSError) as exc:
        print(f"trio-agent serve: {exc}", file=sys.stderr)
        return 2
    limits = limits_from_args(args)

    async def main() -> int:
        from ._redis_cli import open_log_from_args
        from ._runtime import open_runtime

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with (
                open_log_from_args(args) as log,  # --redis URL; None: in memory
                # The runtime's own cap is --max-sessions too: its default (10,000)
                # would refuse sessions that a larger --max-sessions allows.
                open_runtime(
                    model=model, tools=DEMO_TOOLS, log=log, max_sessions=limits.max_sessions
                ) as runtime,
                trio.open_nursery() as nursery,
            ):
                server = AgentServer(
                    runtime, token=token, allow_origins=args.allow_origins, limits=limits
                )
                try:
                    port = await nursery.start(server.serve, args.host, args.port)
                except OSError as exc:
                    print(
                        f"trio-agent serve: can't listen on {args.host}:{args.port}: {exc}",
                        file=sys.stderr,
                    )
                    return 2
                shown = f"[{args.host}]" if ":" in args.host else args.host
                hint = "  (add ?token=… to the page URL)" if token else ""
                print(f"trio-agent serve: http://{shown}:{port}/{hint}", flush=True)
                async for signum in signals:
                    print(
                        f"trio-agent serve: {signal.Signals(signum).name}, shutting down",
                        file=sys.stderr,
                        flush=True,
                    )
                    break
                await cancel_runs(runtime, SHUTDOWN_GRACE)
                await server.drain(SHUTDOWN_GRACE)  # clients get what is left, then 1001
                nursery.cancel_scope.cancel()
        return 0

    try:
        return trio.run(main)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130


async def cancel_runs(runtime: Runtime, grace: float) -> None:
    """Cancel every run still going (through its step's cancel scope), so that clients
    see ``done`` ``cancelled`` before they are closed; bounded by ``grace``."""

    async def cancel(session: Session) -> None:
        try:
            await session.cancel()
        except (SessionStateError, trio.ClosedResourceError):
            pass  # it ended meanwhile

    with trio.move_on_after(grace):
        async with trio.open_nursery() as nursery:
            for session in list(runtime.sessions.values()):
                state = session.state
                if session.is_replica:
                    continue  # a replica: the run belongs to the process that owns it
                if state.running or state.status == "interrupted":
                    nursery.start_soon(cancel, session)
