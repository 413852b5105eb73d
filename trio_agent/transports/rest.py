"""Commands and state over plain HTTP (DESIGN §10): the WebSocket's commands for clients
that read the events as Server-Sent Events.

- ``POST /sessions/{id}/commands`` — one command object, exactly as on the WebSocket
  (``wire.parse_command``: the same ops, fields and errors), ``Content-Type:
  application/json``; the ``Idempotency-Key`` header is the command's ``id`` (both
  given: they must agree).  Answers ``202 {"seq": N, "duplicate": false}``, ``N`` the
  event that acknowledged it (a duplicate id: the event that applied it the first time,
  ``"duplicate": true``), or an error: ``{"error": {"code": …, "message": …}}`` with
  the status of :data:`STATUS` (400 bad input, 401, 403, 409 ``bad_state``, 413, 415,
  429 ``rate_limited`` with ``Retry-After``, 503).  The rate is one token bucket per
  remote address and session (``command_rate``/``command_burst``): HTTP has no
  connection to hang a bucket on, and a remote address and a session are what one page
  of one session is; a token is shared by everyone who has it, so per token would let
  one user starve the others.
- ``GET /sessions/{id}`` — the ``state`` snapshot (the event a client without ``after``
  gets first) as JSON.

Like the event streams, both open the session if the server holds none with that id
(within ``max_sessions``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import attrs
import trio

from .._core import wire
from .._core.commands import Command
from ..errors import CommandError
from . import websocket
from .client import apply, snapshot_of
from .http import HTTPConnection, Refused, Request, session_id_param
from .limits import SessionRefused

if TYPE_CHECKING:
    from .._runtime import Session
    from .server import AgentServer

__all__ = [
    "COMMANDS_PATH",
    "STATE_PATH",
    "STATUS",
    "error_body",
    "get_state",
    "json_content",
    "post_command",
    "respond_error",
    "take_rate",
    "with_key",
]

COMMANDS_PATH: Final = re.compile(r"/sessions/([^/?#]*)/commands")
STATE_PATH: Final = websocket.SESSION_PATH
"""``/sessions/{id}``: a WebSocket upgrade there is the WebSocket; a plain ``GET`` the
state."""

STATUS: Final[Mapping[str, int]] = {
    "bad_json": 400,
    "bad_command": 400,
    "unknown_op": 400,
    "binary_frame": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "bad_input": 400,
    "bad_state": 409,
    "bad_after": 409,
    "log_trimmed": 409,
    "cannot_resume": 409,
    "too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "max_sessions": 503,
    "max_connections": 503,
    "shutting_down": 503,
    "log_unavailable": 503,
}
"""The HTTP status of each ``error`` code a JSON endpoint answers with."""

_CODE_OF_STATUS: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
    431: "too_large",
}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


async def respond_error(
    http: HTTPConnection,
    code: str,
    message: str,
    headers: Sequence[tuple[str, str]] = (),
    status: int | None = None,
) -> None:
    """An ``{"error": {"code", "message"}}`` answer, with the status of ``code``."""
    await http.respond_json(status or STATUS.get(code, 400), error_body(code, message), headers)


async def refuse(
    http: HTTPConnection, refused: Refused, headers: Sequence[tuple[str, str]]
) -> None:
    """A :class:`Refused` as a JSON error."""
    code = refused.code or _CODE_OF_STATUS.get(refused.status, "bad_request")
    await respond_error(http, code, str(refused), (*refused.headers, *headers), refused.status)


def json_content(request: Request) -> None:
    """The body must be JSON (``Content-Type: application/json``): a page of another
    origin then cannot send a command without a CORS preflight."""
    types = request.header("content-type")
    kind = types[0].split(";", 1)[0].strip().lower() if len(types) == 1 else ""
    if kind != "application/json":
        raise Refused(415, f"the body must be JSON (Content-Type: application/json), got {kind!r}")


def take_rate(server: AgentServer, http: HTTPConnection, session_id: str) -> None:
    """One command from this remote address to this session, or :class:`Refused` (429)."""
    limits = server.limits
    if not server.command_rate.take((http.peer, session_id), trio.current_time()):
        wait = max(1, math.ceil(1 / limits.command_rate))
        raise Refused(
            429,
            f"command dropped: more than {limits.command_rate:g} commands/s "
            f"(burst {limits.command_burst}) from this address to this session (command_rate)",
            [("retry-after", str(wait))],
            code="rate_limited",
        )


def with_key(command: Command, request: Request) -> Command:
    """``command`` with the ``Idempotency-Key`` header as its id (:class:`Refused` if
    it is malformed or disagrees with the body's ``id``)."""
    keys = request.header("idempotency-key")
    if not keys:
        return command
    if len(keys) > 1:
        raise Refused(400, "more than one Idempotency-Key header", code="bad_command")
    key = keys[0].strip()
    if command.id is not None and command.id != key:
        raise Refused(
            400,
            f"the Idempotency-Key {key!r} and the command's id {command.id!r} differ",
            code="bad_command",
        )
    try:
        return attrs.evolve(command, id=key)
    except (TypeError, ValueError) as exc:
        raise Refused(400, f"Idempotency-Key: {exc}", code="bad_command") from None


async def _session(server: AgentServer, session_id: str) -> Session:
    try:
        return await server.open_session(session_id)
    except SessionRefused as refused:
        raise Refused(STATUS[refused.code], str(refused), code=refused.code) from None


async def post_command(
    server: AgentServer, http: HTTPConnection, request: Request, match: re.Match[str]
) -> None:
    """``POST /sessions/{id}/commands`` (see the module docstring)."""
    cors: list[tuple[str, str]] = []
    try:
        params = request.params(("token",))
        server.access.check(request, params.get("token"))
        cors = server.access.cors_headers(request)
        session_id = session_id_param(match.group(1))
        json_content(request)
        take_rate(server, http, session_id)
        body = await http.read_body(server.limits.max_frame_size)
        try:
            command = wire.parse_command(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise Refused(400, f"not UTF-8: invalid byte at {exc.start}", code="bad_json") from None
        except CommandError as exc:
            raise Refused(400, str(exc), code=exc.code) from None
        command = with_key(command, request)
        session = await _session(server, session_id)
    except Refused as refused:
        await refuse(http, refused, cors)
        return
    outcome = await apply(session, command)
    server.touch(session)
    if outcome.applied is None:
        await respond_error(http, outcome.code, outcome.message, cors)
        return
    answer = {"seq": outcome.applied.seq, "duplicate": outcome.applied.duplicate}
    await http.respond_json(202, answer, cors)


async def get_state(
    server: AgentServer, http: HTTPConnection, request: Request, match: re.Match[str]
) -> None:
    """``GET /sessions/{id}``: the ``state`` snapshot as JSON."""
    cors: list[tuple[str, str]] = []
    try:
        params = request.params(("token",))
        server.access.check(request, params.get("token"))
        cors = server.access.cors_headers(request)
        session = await _session(server, session_id_param(match.group(1)))
    except Refused as refused:
        await refuse(http, refused, cors)
        return
    server.touch(session)
    await http.respond_json(200, snapshot_of(session).to_dict(), cors)
