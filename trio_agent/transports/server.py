"""The server: a runtime's sessions over WebSocket (DESIGN §6), Server-Sent Events, HTTP
commands and AG-UI (DESIGN §10), and the page, on one port.

Ownership: :meth:`AgentServer.serve` owns a nursery in which ``trio.serve_listeners``
runs one handler task per TCP connection.  Each handler owns a nursery of its own for
trio-websocket's reader task and, once the WebSocket is accepted, for the client's two
tasks: the *pump* (a UI consumer of DESIGN §1: one bounded subscription, drained in
batches, one frame per batch) and the *reader* (client commands to ``Session.apply``).
Cancelling ``serve`` closes every client with code 1001 and joins every task; it never
touches a run — runs belong to the runtime's nursery, and a client that leaves does not
cancel its run.

A request is read by :class:`~.http.HTTPConnection` and dispatched by its head: a
WebSocket upgrade, or a plain request answered by the route its method and path find in
:data:`ROUTES` (the event stream, commands, the state, AG-UI, the page; a refusal is a
plain HTTP response).  A client of any transport is admitted by
:meth:`AgentServer.attach`: the limits, the session (:meth:`AgentServer.open_session`:
opened if need be, and then expired when idle), its subscription, and the registry that
``drain()`` and ``statistics()`` read.

The protocol — endpoint, auth, ops, frames, errors, close codes, limits — is written
down in ``docs/protocol.md``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Final

import attrs
import trio
from trio_websocket import ConnectionClosed

from .._bus import Subscription
from .._core.histogram import HistogramSnapshot
from .._runtime import Runtime, Session
from ..errors import LogTrimmed, SessionLimitError
from . import agui, rest, sse, websocket
from .agui_runs import AGUIRuns
from .client import Client, Counters, snapshot_of
from .http import Access, HTTPConnection, Page, Refused, Request
from .idle import IDLE_CHECKS, IdleSessions
from .limits import CLOSE_GOING_AWAY, RateLimiter, ServerLimits, SessionRefused
from .metrics import METRICS_PATH, ServerMetrics
from .routes import Route, Routes

__all__ = ["ROUTES", "AgentServer", "ServerStatistics", "serve_websocket"]


async def _page(
    server: AgentServer, http: HTTPConnection, request: Request, match: re.Match[str]
) -> None:
    await server.page.respond(http, request)


async def _metrics(
    server: AgentServer, http: HTTPConnection, request: Request, match: re.Match[str]
) -> None:
    await server.metrics.respond(http, request, server.access)


ROUTES: Final = Routes(
    [
        Route(("GET",), sse.EVENTS_PATH, sse.serve_events, cors=True),
        Route(("POST",), rest.COMMANDS_PATH, rest.post_command, cors=True),
        Route(("GET",), rest.STATE_PATH, rest.get_state, cors=True),
        Route(("POST",), agui.RUN_PATH, agui.post_run, cors=True),
        Route(("GET",), agui.JOIN_PATH, agui.join_run, cors=True),
        Route(("GET", "HEAD"), re.compile(re.escape(METRICS_PATH)), _metrics),
        Route(("GET", "HEAD"), re.compile(r"/.*"), _page),  # the page (404 for other files)
    ]
)
"""The plain-HTTP endpoints, tried in order (a WebSocket upgrade is answered before
them): docs/protocol.md lists them."""


logger = logging.getLogger("trio_agent.server")


@attrs.frozen(slots=True)
class ServerStatistics:
    """A server's counters, as ``AgentServer.statistics()`` returns them."""

    clients: int
    """Clients connected now: WebSockets, SSE and AG-UI streams."""
    clients_by_session: dict[str, int]
    frames_sent: int
    events_sent: int
    """Events delivered, counting each merged token separately."""
    events_merged: int
    """Events folded into the one before them in a frame (see ``wire.merge_events``)."""
    errors_sent: int
    """Client-only ``error`` events."""
    http_requests: int
    """Plain HTTP requests (not WebSocket upgrades), event streams included."""
    clients_by_transport: dict[str, int] = attrs.field(factory=dict)
    """Clients connected now, by transport (``Client.transport``: ``websocket``, …)."""
    commands_refused: dict[str, int] = attrs.field(factory=dict)
    """Client commands refused, by the ``error`` code the client got."""
    send_latency: HistogramSnapshot | None = None
    """Publish-to-send latency of the live frames sent (seconds, from the publish of a
    frame's oldest event to the frame sent)."""


class AgentServer:
    """Serves a runtime's sessions over WebSocket, SSE, HTTP commands and AG-UI, and the
    page, on one port.

    ``port = await nursery.start(server.serve, host, port)``; cancel to stop (clients
    get close code 1001).  See :func:`serve_websocket` for the one-call form.

    What the endpoints share (public, for :mod:`.sse`, :mod:`.rest`, :mod:`.agui`):
    ``runtime``, ``limits``, ``access`` (token and origins), ``counters`` (what every
    client sent), ``page``, ``command_rate`` (the HTTP commands' buckets, per remote
    address and session), ``agui_runs`` (the AG-UI runs a stream can rejoin),
    :meth:`open_session` and :meth:`attach`.
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
        self.access = Access(token, allow_origins)
        self.page = Page.load()
        self.command_rate = RateLimiter(limits.command_rate, limits.command_burst)
        self.agui_runs = AGUIRuns()
        self._clients: set[Client] = set()
        self._clients_left = trio.lowlevel.ParkingLot()  # drain() waits on it
        self._stopping = False
        self._idle = IdleSessions(limits.session_idle_timeout)  # those this server opened
        self._reserved = 0  # clients past the checks, being accepted or connected
        self.counters = Counters()
        self._http = 0
        self.metrics = ServerMetrics(self)
        """What ``GET /metrics`` answers (the hook: replace it to serve other metrics):
        this server's and its runtime's statistics in the Prometheus text format."""

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
        by_transport: dict[str, int] = {}
        for c in self._clients:
            by_transport[c.transport] = by_transport.get(c.transport, 0) + 1
            if c.session is not None:
                by_session[c.session.id] = by_session.get(c.session.id, 0) + 1
        counters = self.counters
        return ServerStatistics(
            clients=len(self._clients),
            clients_by_session=by_session,
            frames_sent=counters.frames,
            events_sent=counters.events,
            events_merged=counters.merged,
            errors_sent=counters.errors,
            http_requests=self._http,
            clients_by_transport=by_transport,
            commands_refused=dict(counters.refused),
            send_latency=counters.send_latency.snapshot(),
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
        self.access.bound_host = host
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

    async def _dispatch(self, stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        http = HTTPConnection(stream, self.limits)
        request = await http.read_request()
        if request is None:
            return
        if not request.wants_websocket:
            self._http += 1
            await self._serve_http(http, request)
            return
        try:
            session_id, after = websocket.check_upgrade(request, self.access)
        except Refused as refused:
            await http.refuse(refused)
            return
        ws = await websocket.accept(nursery, stream, http.received, self.limits)
        client = websocket.WebSocketClient(ws, stream, self.counters, self.limits)
        try:
            await self.attach(client, session_id, after)
        finally:
            await client.aclose()

    async def _serve_http(self, http: HTTPConnection, request: Request) -> None:
        """Answer a plain request by its route (:data:`ROUTES`); a CORS preflight of a
        route that takes one is answered here."""
        try:
            route, match = ROUTES.find(request.method, request.path)
            if request.method == "OPTIONS":
                headers = self.access.preflight(request, (*route.methods, "OPTIONS"))
                await http.respond(204, b"", headers)
                return
        except Refused as refused:
            await http.refuse(refused)
            return
        await route.handler(self, http, request, match)

    # ---- the session of a client -----------------------------------------------------------

    async def open_session(self, session_id: str) -> Session:
        """The session ``session_id`` for a client: the one the runtime holds, or a new
        one (within ``max_sessions``; then expired when idle).  Raises
        :class:`SessionRefused` (``max_sessions``, ``shutting_down``)."""
        if self._stopping:
            raise SessionRefused("shutting_down", "server shutting down")
        session = self.runtime.get_session(session_id)
        if session is not None and not session.closed:
            return session
        # (a session closing under this id is replaced one for one: no new place)
        limit = self.limits.max_sessions
        if session is None and len(self.runtime.sessions) >= limit:
            raise SessionRefused(
                "max_sessions",
                f"can't open session {session_id!r}: the server already holds "
                f"{limit} sessions (max_sessions)",
            )
        try:
            session = await self.runtime.open_session(session_id)
        except SessionLimitError as exc:
            raise SessionRefused("max_sessions", str(exc)) from None
        except trio.ClosedResourceError:
            raise SessionRefused("shutting_down", "server shutting down") from None
        self._idle.add(session, trio.current_time())
        if self._stopping:  # drain() began while the session was being opened
            raise SessionRefused("shutting_down", "server shutting down")
        return session

    def touch(self, session: Session) -> None:
        """A client used ``session`` without staying (an HTTP command, a state read):
        its idle time counts from now."""
        self._idle.left(session, trio.current_time())

    # ---- one client, of any transport -----------------------------------------------------

    async def attach(self, client: Client, session_id: str, after: int | None) -> None:
        """Admit ``client`` to the session ``session_id`` and run it until it ends.

        In order: the server is not stopping, ``max_connections``, the session (opened
        if there is none, within ``max_sessions``; then expired when idle), its
        subscription (``after``: replay the log after that seq first; None: a
        ``state`` snapshot first), then :meth:`Client.run`.  A client refused on the way
        is told why (:meth:`Client.refuse`) or given its close; one cancelled from
        outside (the server stopping) gets what was published for it first.  Either
        way the caller closes the client after.
        """
        limits = self.limits
        if self._stopping:  # drain() began: no new client (nor session)
            client.end(CLOSE_GOING_AWAY, "server shutting down")
            return
        if self._reserved >= limits.max_connections:
            await client.refuse(
                "max_connections",
                f"the server already has {limits.max_connections} clients (max_connections)",
            )
            return
        self._reserved += 1
        try:
            try:
                session = await self.open_session(session_id)
            except SessionRefused as refused:
                if refused.code == "shutting_down":
                    client.end(CLOSE_GOING_AWAY, "server shutting down")
                else:
                    await client.refuse(refused.code, str(refused))
                return
            client.session = session
            try:
                sub = self._subscribe(session, after)
            except (LogTrimmed, ValueError) as exc:
                code = "log_trimmed" if isinstance(exc, LogTrimmed) else "bad_after"
                if not await client.cannot_replay(code, str(exc)):
                    return
                after = None
                try:
                    sub = self._subscribe(session, None)
                except trio.ClosedResourceError:
                    client.end(CLOSE_GOING_AWAY, "session closed")
                    return
            except trio.ClosedResourceError:
                client.end(CLOSE_GOING_AWAY, "session closed")
                return
            # Same synchronous step as the subscription: the snapshot's seq is exactly
            # the seq after which the subscription's live events start.
            snapshot = None if after is not None else snapshot_of(session)
            self._clients.add(client)
            try:
                await client.run(session, sub, snapshot)
            finally:
                if not client.ended:
                    # Cancelled from outside (the server is stopping): deliver what
                    # was published for this client before the close frame.
                    with trio.CancelScope(shield=True), trio.move_on_after(limits.close_timeout):
                        await client.flush(sub)
                sub.close()
                self._clients.discard(client)
                self._clients_left.unpark_all()
                self._idle.left(session, trio.current_time())
        finally:
            self._reserved -= 1

    def _subscribe(self, session: Session, after: int | None) -> Subscription:
        limits = self.limits
        return session.open_subscription(
            after=after,
            capacity=limits.subscriber_capacity,
            policy="block",
            stall_timeout=limits.stall_timeout,
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
