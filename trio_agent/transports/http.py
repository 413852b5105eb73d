"""HTTP on the server's one port: what every endpoint shares before it does its own work.

- :class:`HTTPConnection` — one connection, server side: its request head read by h11
  (:meth:`~HTTPConnection.read_request`, bounded in size and time), its body
  (:meth:`~HTTPConnection.read_body`, bounded too), a plain response
  (:meth:`~HTTPConnection.respond`) or a streamed one (:meth:`~HTTPConnection.begin`,
  :meth:`~HTTPConnection.write`, :meth:`~HTTPConnection.finish`: chunked, for event
  streams).  No HTTP is parsed by hand.
- :class:`Request` — the head as a value: method, path, query, headers; its query
  parameters checked against the names an endpoint takes (:meth:`Request.params`).
- :class:`Refused` — a request refused with a plain HTTP response (status, message,
  headers), raised by the checks and answered by :meth:`HTTPConnection.refuse`.
- :class:`Access` — who may use the sessions: the bearer token (``?token=`` or
  ``Authorization: Bearer``, compared as digests) and the browser origins allowed
  (listed, or the server's own page — with the DNS-rebinding rule of
  :meth:`Access.host_trusted`).  Authentication first: nothing else is said to a
  client without the token.  CORS for the allowed origins (:meth:`Access.cors_headers`,
  :meth:`Access.preflight`), for the endpoints a page of another origin may call.
- :class:`Page` — the browser page (``web/`` in the package) and the headers it is
  served with.
- :func:`session_id_param`, :func:`seq_param` — a session id from a path, a seq from a
  query parameter, refused with 400 naming what was wrong.
- :func:`is_loopback` — whether a host is reachable from this machine only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Final

import attrs
import h11
import orjson
import trio

from .._runtime import validate_session_id
from .limits import ServerLimits

__all__ = [
    "CORS_HEADERS",
    "CORS_MAX_AGE",
    "MAX_QUERY_FIELDS",
    "PAGE_FILES",
    "PAGE_HEADERS",
    "READ_SIZE",
    "Access",
    "HTTPConnection",
    "Page",
    "Refused",
    "Request",
    "is_loopback",
    "seq_param",
    "session_id_param",
]

logger = logging.getLogger("trio_agent.server")

READ_SIZE: Final = 16384
"""Bytes asked of the socket at a time while the request head is read."""

MAX_QUERY_FIELDS: Final = 8
"""Query parameters parsed at most; more is refused (400): no endpoint takes more than a
few, and parsing is work a stranger could ask of the server."""

_SEQ: Final = re.compile(r"[0-9]{1,18}")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

PAGE_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
"""Path → (file in ``trio_agent/web``, content type)."""

PAGE_HEADERS: Final = (
    (
        "content-security-policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)
"""What the page is served with: it runs only its own scripts, talks only to its own
server, and is framed by no one."""

CORS_HEADERS: Final = "authorization, content-type, idempotency-key, last-event-id"
"""The request headers a page of an allowed origin may send (a preflight's answer)."""

CORS_MAX_AGE: Final = 600
"""Seconds a browser may cache a preflight's answer: ten minutes, so that a page does
not pay a preflight per command, and a changed allow-list is seen soon."""


class Refused(Exception):
    """A request refused with a plain HTTP response: ``status``, the message (the body),
    and extra ``headers``.  Raised by the checks; :meth:`HTTPConnection.refuse` answers
    it.  It never leaves the server."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Sequence[tuple[str, str]] = (),
        *,
        code: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = tuple(headers)
        self.code = code  # the ``error`` code of a JSON endpoint's answer ("": by status)


def _alternatives(names: Sequence[str]) -> str:
    if len(names) <= 2:
        return " or ".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


@attrs.frozen
class Request:
    """A request head, as h11 read it: ``method`` (``"GET"``), ``target`` (path and
    query, undecoded), ``headers`` (names in lower case, values as sent), and the
    target's ``path`` and ``query`` (undecoded)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    path: str = attrs.field(
        init=False,
        default=attrs.Factory(lambda r: urllib.parse.urlsplit(r.target).path, takes_self=True),
    )
    query: str = attrs.field(
        init=False,
        default=attrs.Factory(lambda r: urllib.parse.urlsplit(r.target).query, takes_self=True),
    )

    @classmethod
    def from_h11(cls, request: h11.Request) -> Request:
        return cls(
            method=request.method.decode("latin-1"),
            target=request.target.decode("latin-1"),
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers),
        )

    def header(self, name: str) -> list[str]:
        """Every value of the header ``name`` (lower case), in order."""
        return [v for k, v in self.headers if k == name]

    @property
    def wants_websocket(self) -> bool:
        """Whether this is a WebSocket upgrade (``Upgrade: websocket``)."""
        return any("websocket" in v.lower() for v in self.header("upgrade"))

    def params(self, allowed: Sequence[str]) -> dict[str, str]:
        """The query parameters, each given at most once and each one of ``allowed``;
        else :class:`Refused` (400) naming the one that is wrong."""
        try:
            query = urllib.parse.parse_qs(
                self.query,
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=MAX_QUERY_FIELDS,
            )
        except ValueError:
            raise Refused(400, "too many query parameters") from None
        for name, values in query.items():
            if name not in allowed:
                raise Refused(
                    400, f"unknown query parameter {name!r}; expected {_alternatives(allowed)}"
                )
            if len(values) > 1:
                raise Refused(400, f"query parameter {name!r} given {len(values)} times")
        return {name: values[0] for name, values in query.items()}


def session_id_param(segment: str) -> str:
    """The session id in a path segment (percent-decoded, then validated), or
    :class:`Refused` (400) saying what is wrong with it."""
    try:
        return validate_session_id(urllib.parse.unquote(segment))
    except ValueError as exc:
        raise Refused(400, str(exc)) from None


def seq_param(name: str, text: str) -> int:
    """The seq (an integer >= 0) in the query parameter ``name``, or :class:`Refused`."""
    if _SEQ.fullmatch(text) is None:
        raise Refused(
            400, f"query parameter {name!r} must be a seq (an integer >= 0), got {text!r}"
        )
    return int(text)


class HTTPConnection:
    """One HTTP/1.1 connection, server side, for one request: every response ends it
    (``connection: close``).  Once the head is read, ``received`` holds every byte read
    from ``stream`` — the head and perhaps more — for a WebSocket handshake to replay."""

    def __init__(self, stream: trio.abc.Stream, limits: ServerLimits) -> None:
        self.stream = stream
        self.limits = limits
        self.received = b""
        self.started = False  # a response head went out
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_request_head)

    @property
    def peer(self) -> str:
        """The remote address (``""`` if the stream is not a socket)."""
        if isinstance(self.stream, trio.SocketStream):
            try:
                return str(self.stream.socket.getpeername()[0])
            except OSError:
                return ""
        return ""

    async def read_request(self) -> Request | None:
        """The request head; None if the peer closed or went quiet first (within
        ``handshake_timeout``), or sent no HTTP (it was answered 400)."""
        conn = self._conn
        raw = bytearray()
        with trio.move_on_after(self.limits.handshake_timeout):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    await self.respond(exc.error_status_hint, f"bad request: {exc}")
                    return None
                if event is h11.NEED_DATA:
                    data = bytes(await self.stream.receive_some(READ_SIZE))
                    raw += data
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    self.received = bytes(raw)
                    return Request.from_h11(event)
                return None  # ConnectionClosed before a request
        return None

    async def read_body(self, limit: int) -> bytes:
        """The request's body, at most ``limit`` bytes (:class:`Refused` 413 beyond,
        400 if it is not HTTP), within ``handshake_timeout`` (then 408)."""
        conn = self._conn
        body = bytearray()
        with trio.move_on_after(self.limits.handshake_timeout):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise Refused(exc.error_status_hint, f"bad request: {exc}") from None
                if event is h11.NEED_DATA:
                    if conn.they_are_waiting_for_100_continue:
                        await self.stream.send_all(
                            conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                        )
                    data = bytes(await self.stream.receive_some(READ_SIZE))
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > limit:
                        raise Refused(
                            413, f"request body over the limit of {limit} bytes", code="too_large"
                        )
                    continue
                if isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                raise Refused(400, "bad request: the body ended early")
        raise Refused(408, "request timeout: the body did not arrive in time")

    async def respond(
        self,
        status: int,
        text: str | bytes,
        headers: Sequence[tuple[str, str]] = (),
        content_type: str = "text/plain; charset=utf-8",
        head_only: bool = False,
    ) -> None:
        """A whole response: ``text`` (a line of plain text) or bytes as the body,
        never cached, never sniffed; sending it is bounded by ``close_timeout``."""
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
        conn = self._conn
        try:
            data = conn.send(h11.Response(status_code=status, headers=all_headers))
            if body and not head_only:
                data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(self.limits.close_timeout):
            await self.stream.send_all(data)

    async def refuse(self, refused: Refused) -> None:
        await self.respond(refused.status, str(refused), refused.headers)

    async def respond_json(
        self, status: int, obj: object, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """A whole JSON response."""
        await self.respond(status, orjson.dumps(obj), headers, "application/json")

    # ---- a streamed response (an event stream) ------------------------------------------

    def begin(self, status: int, headers: Sequence[tuple[str, str]], content_type: str) -> bytes:
        """The head of a response whose body is streamed (chunked, never cached, never
        sniffed), as bytes to send; then :meth:`write` each piece and :meth:`finish`."""
        self.started = True
        head = h11.Response(
            status_code=status,
            headers=[
                ("content-type", content_type),
                ("cache-control", "no-store"),
                ("x-content-type-options", "nosniff"),
                ("x-accel-buffering", "no"),  # (nginx: don't hold the stream back)
                ("connection", "close"),
                *headers,
            ],
        )
        return self._conn.send(head) or b""

    def write(self, data: bytes) -> bytes:
        """One piece of a streamed body, framed (a chunk), as bytes to send."""
        return self._conn.send(h11.Data(data=data)) or b""

    def finish(self) -> bytes:
        """The end of a streamed body, as bytes to send (b"" if it can't end cleanly)."""
        try:
            return self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return b""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` is reachable only from this machine."""
    if host.strip("[]") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Access:
    """Who may use the sessions: the bearer token (None: anyone who can connect) and
    the browser origins allowed besides the server's own page.  ``bound_host`` is the
    host the server listens on (set by the server once it does)."""

    def __init__(self, token: str | None, allow_origins: Iterable[str]) -> None:
        self._token = None if token is None else _digest(token)
        self._origins = frozenset(o.rstrip("/").lower() for o in allow_origins)
        self.bound_host = ""

    def check(self, request: Request, query_token: str | None) -> None:
        """The token, then the origin; :class:`Refused` (401, 403) for the first that
        fails.  ``query_token``: the ``?token=`` the endpoint took, if any."""
        self.check_token(request, query_token)
        self.check_origin(request)

    def check_token(self, request: Request, query_token: str | None) -> None:
        """The token, from ``Authorization: Bearer`` (which wins) or ``query_token``;
        :class:`Refused` (401) if it is missing or wrong."""
        if self._token is None:
            return
        given = query_token
        for value in request.header("authorization"):
            scheme, _, credentials = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                given = credentials.strip()
        # Compare digests: constant time, and no length to leak.
        if given is None or not hmac.compare_digest(_digest(given), self._token):
            raise Refused(
                401,
                "unauthorized: a valid token is required (?token= or Authorization: Bearer)",
                [("www-authenticate", 'Bearer realm="trio-agent"')],
            )

    def check_origin(self, request: Request) -> None:
        """A browser's ``Origin`` must be allowed: listed, or this server's own page
        (Origin == http://Host).  No Origin: not a browser, judged by its token alone."""
        origins = request.header("origin")
        if not origins:
            return
        if len(origins) > 1:
            raise Refused(403, "forbidden: more than one Origin header")
        origin = origins[0].strip().rstrip("/").lower()
        if origin in self._origins:
            return
        hosts = request.header("host")
        host = hosts[0].strip().lower() if len(hosts) == 1 else ""
        if host and origin in (f"http://{host}", f"https://{host}") and self.host_trusted(host):
            return
        raise Refused(403, f"forbidden: origin {origins[0]!r} is not allowed (see --allow-origin)")

    def cors_headers(self, request: Request) -> list[tuple[str, str]]:
        """The CORS headers of an answer to ``request`` from an allowed page of another
        origin (its ``Origin`` echoed); none without an ``Origin``.  Call after
        :meth:`check_origin`, which refused the others."""
        origins = request.header("origin")
        if len(origins) != 1:
            return []
        return [("access-control-allow-origin", origins[0].strip()), ("vary", "origin")]

    def preflight(self, request: Request, methods: Sequence[str]) -> list[tuple[str, str]]:
        """The answer's headers to a CORS preflight (``OPTIONS`` with
        ``Access-Control-Request-Method``) for an endpoint that takes ``methods``;
        :class:`Refused` (403) for an origin not allowed (no token needed: a browser
        sends none with a preflight)."""
        if len(request.header("origin")) != 1:
            raise Refused(400, "a CORS preflight needs one Origin header")
        self.check_origin(request)
        return [
            *self.cors_headers(request),
            ("access-control-allow-methods", ", ".join(methods)),
            ("access-control-allow-headers", CORS_HEADERS),
            ("access-control-max-age", str(CORS_MAX_AGE)),
        ]

    def host_trusted(self, host: str) -> bool:
        """Whether a same-origin page at ``host`` is this server's own.  With a token,
        any: the token is the proof.  Without one, only a loopback name or the host the
        server was bound to, so that a DNS-rebinding page (evil.example resolving to
        127.0.0.1 — its Origin and Host agree) cannot drive the sessions."""
        if self._token is not None:
            return True
        name = urllib.parse.urlsplit(f"//{host}").hostname or ""
        return is_loopback(name) or name == self.bound_host.lower()


class Page:
    """The browser page: the files of ``trio_agent/web`` (read once), by path."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    @classmethod
    def load(cls) -> Page:
        web = resources.files("trio_agent") / "web"
        out: dict[str, bytes] = {}
        for name, _ in PAGE_FILES.values():
            try:
                out[name] = (web / name).read_bytes()
            except FileNotFoundError:  # pragma: no cover - a broken install
                logger.warning("the page file web/%s is missing", name)
        return cls(out)

    async def respond(self, http: HTTPConnection, request: Request) -> None:
        """Answer a ``GET`` or ``HEAD`` of ``request.path``: the file (200, with
        :data:`PAGE_HEADERS`) or 404."""
        head_only = request.method == "HEAD"
        page = PAGE_FILES.get(request.path)
        if page is None or page[0] not in self.files:
            await http.respond(404, f"not found: {request.path}", head_only=head_only)
            return
        name, content_type = page
        await http.respond(200, self.files[name], PAGE_HEADERS, content_type, head_only=head_only)
