"""The WebSocket endpoint, ``ws://HOST:PORT/sessions/{id}`` (DESIGN §6): the checks of
an upgrade, the handshake, and one client.

HTTP is parsed by h11 (:mod:`.http`) and WebSocket by wsproto, through trio-websocket:
for an upgrade, the bytes h11 has read already are replayed
(:class:`ReplayStream`) into ``trio_websocket.wrap_server_stream``, which does the
handshake.

A :class:`WebSocketClient` is a :class:`~.client.Client` whose framing is one JSON array
per WebSocket message, sent within ``send_timeout``; its tasks are the pump (in
:class:`~.client.Client`) and the command reader (client commands, at most
``command_rate`` a second, to ``Session.apply``).  Its close frame carries the code and
reason decided for it, or 1001 "server shutting down".
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._bus import Subscription
from .._core import events as ev
from .._runtime import Session
from .client import Client, Counters, apply_command
from .http import Access, Refused, Request, seq_param, session_id_param
from .limits import CLOSE_GOING_AWAY, MAX_CLOSE_REASON, ServerLimits, TokenBucket

__all__ = [
    "SESSION_PATH",
    "ReplayStream",
    "WebSocketClient",
    "accept",
    "check_upgrade",
    "truncate_reason",
]

SESSION_PATH: Final = re.compile(r"/sessions/([^/?#]*)")
"""The WebSocket endpoint's path; the group is the session id (percent-encoded)."""


def check_upgrade(request: Request, access: Access) -> tuple[str, int | None]:
    """The session id and ``after`` of an upgrade request, or :class:`~.http.Refused`
    naming the first thing wrong: the method, the upgrade headers, the path, the query,
    the token, the origin, the session id, ``after`` — in that order."""
    if request.method != "GET":
        raise Refused(405, "a WebSocket upgrade is a GET", [("allow", "GET")])
    keys = request.header("sec-websocket-key")
    versions = request.header("sec-websocket-version")
    if len(keys) != 1 or versions != ["13"]:
        raise Refused(
            426,
            "bad WebSocket upgrade: one Sec-WebSocket-Key and Sec-WebSocket-Version: 13 "
            "are required",
            [("sec-websocket-version", "13")],
        )
    match = SESSION_PATH.fullmatch(request.path)
    if match is None:
        raise Refused(404, f"not found: {request.path} (the endpoint is /sessions/{{id}})")
    params = request.params(("after", "token"))
    # Authentication first: nothing else is said to a client without the token.
    access.check(request, params.get("token"))
    session_id = session_id_param(match.group(1))
    after = seq_param("after", params["after"]) if "after" in params else None
    return session_id, after


class ReplayStream(trio.abc.Stream):
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


async def accept(
    nursery: trio.Nursery, stream: trio.abc.Stream, received: bytes, limits: ServerLimits
) -> WebSocketConnection:
    """The WebSocket handshake on ``stream``, whose first ``received`` bytes (the
    request head) were read already; trio-websocket's reader task runs in ``nursery``."""
    request = await trio_websocket.wrap_server_stream(
        nursery,
        ReplayStream(received, stream),
        message_queue_size=1,
        max_message_size=limits.max_message_size,
    )
    return await request.accept()


def truncate_reason(reason: str) -> str:
    """``reason``, cut to fit a close frame (``MAX_CLOSE_REASON`` bytes of UTF-8)."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON:
        return reason
    return data[: MAX_CLOSE_REASON - 3].decode("utf-8", "ignore") + "..."


class WebSocketClient(Client):
    """One accepted WebSocket client of one session."""

    transport = "websocket"

    def __init__(
        self,
        ws: WebSocketConnection,
        stream: trio.abc.Stream,
        counters: Counters,
        limits: ServerLimits,
    ) -> None:
        super().__init__(counters, limits)
        self.ws = ws
        self.stream = stream  # the TCP stream, to abort a connection that can't close
        self.sending = False  # in send_message: if cancelled now, the stream may be cut

    async def run(
        self, session: Session, sub: Subscription, snapshot: ev.StateSnapshot | None
    ) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.pump, sub, snapshot)
                nursery.start_soon(self.read_commands, session)

    async def send_frame(self, events: list[dict[str, Any]]) -> bool:
        return await self.send(orjson.dumps(events).decode())

    async def send(self, frame: str) -> bool:
        """Send one message; False (and the client ended) if it could not go out
        within ``send_timeout``."""
        with trio.move_on_after(self.limits.send_timeout) as scope:
            try:
                self.sending = True
                await self.ws.send_message(frame)
                self.sending = False  # (left True if cancelled from outside)
            except ConnectionClosed:
                self.end(gone=True)
                return False
        if scope.cancelled_caught:
            # Cancelled mid-frame: the byte stream is cut, no close frame can follow.
            self.gone = True
            await self.stream.aclose()
            self.end(gone=True)
            return False
        return True

    async def flush(self, sub: Subscription) -> None:
        if self.sending:  # a frame was cut short: nothing more can go on this stream
            self.gone = True
            await self.stream.aclose()
            return
        await super().flush(sub)

    async def read_commands(self, session: Session) -> None:
        """Client frames to ``session``, each answered with an ``error`` for this
        client if it is over the rate, too large, not a command, or refused."""
        limits = self.limits
        bucket = TokenBucket(limits.command_rate, limits.command_burst, trio.current_time())
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed:
                self.end(gone=True)
                return
            if not bucket.take(trio.current_time()):
                self.counters.refuse("rate_limited")
                await self.send_error(
                    "rate_limited",
                    f"command dropped: more than {limits.command_rate:g} commands/s "
                    f"(burst {limits.command_burst}) on this connection (command_rate)",
                )
                continue
            if len(message) > limits.max_frame_size:
                self.counters.refuse("frame_too_large")
                await self.send_error(
                    "frame_too_large",
                    f"frame dropped: {len(message)} characters is over the limit of "
                    f"{limits.max_frame_size} (max_frame_size)",
                )
                continue
            reply = (await apply_command(session, message, self.counters)).reply()
            if reply is not None:
                if reply["type"] == "error":
                    self.counters.errors += 1
                await self.send_frame([reply])

    async def aclose(self) -> None:
        """Send the close frame (1001 if nothing else was decided: the server is
        stopping), bounded by ``close_timeout``; abort the socket if it can't go."""
        if self.gone or self.ws.closed is not None:
            return
        if self.sending:  # cancelled mid-frame: a close frame would corrupt the stream
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            return
        code, reason = self.close or (CLOSE_GOING_AWAY, "server shutting down")
        with trio.CancelScope(shield=True), trio.move_on_after(self.limits.close_timeout) as scope:
            try:
                await self.ws.aclose(code, truncate_reason(reason))
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
