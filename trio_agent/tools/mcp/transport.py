"""The SDK transport for one connection to an MCP server, watched: :func:`open_transport`.

The SDK's ``stdio_client`` and ``streamable_http_client`` give a pair of streams; the
read stream ends when the server goes (a subprocess that exited or closed its stdout).
Nothing else tells a client that an idle server is gone, so the read stream is wrapped
(:class:`WatchedStream`, the SDK's own stream protocol): when it ends, ``ended`` is set,
and the connection knows to start the server again on the next call.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final, Generic, Protocol, Self, TypeVar

import anyio
import httpx2
import trio
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from .server import McpServer

__all__ = ["HTTP_READ_TIMEOUT", "HTTP_TIMEOUT", "WatchedStream", "open_transport"]

HTTP_TIMEOUT: Final = 30.0
"""Seconds to connect to, write to or wait for a pooled connection of an MCP server at a
URL given ``headers`` (the SDK's own default for the client it makes without them)."""

HTTP_READ_TIMEOUT: Final = 300.0
"""Seconds an MCP server at a URL given ``headers`` may send nothing on a response
stream it holds open (the SDK's own default); a call's own bound is its timeout."""

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)

Item = SessionMessage | Exception


class Receiver(Protocol[_T_co]):
    """What :class:`WatchedStream` needs of the stream it watches."""

    async def receive(self) -> _T_co: ...
    async def aclose(self) -> None: ...


class WatchedStream(Generic[_T]):
    """A read stream that sets ``ended`` once it has ended (or was closed)."""

    def __init__(self, inner: Receiver[_T], ended: trio.Event) -> None:
        self.inner = inner
        self.ended = ended

    @property
    def last_context(self) -> object:
        """The sender's context of the last item, for the SDK (where the stream has it)."""
        return getattr(self.inner, "last_context", None)

    async def receive(self) -> _T:
        try:
            return await self.inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.ended.set()
            raise

    async def aclose(self) -> None:
        self.ended.set()
        await self.inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> _T:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def open_transport(
    server: McpServer, ended: trio.Event
) -> AsyncIterator[tuple[WatchedStream[Item], Any]]:
    """The SDK's streams to ``server`` (a subprocess over stdio, or streamable HTTP),
    the read one watched: ``ended`` is set when it ends."""
    if server.command is not None:
        params = StdioServerParameters(
            command=server.command[0],
            args=list(server.command[1:]),
            env=dict(server.env) if server.env is not None else None,
            cwd=server.cwd,
        )
        async with stdio_client(params, errlog=sys.stderr) as (read, write):
            yield WatchedStream(read, ended), write
        return
    assert server.url is not None
    if server.headers is None:
        async with streamable_http_client(server.url) as (read, write):
            yield WatchedStream(read, ended), write
        return
    timeout = httpx2.Timeout(HTTP_TIMEOUT, read=HTTP_READ_TIMEOUT)
    async with (
        httpx2.AsyncClient(headers=dict(server.headers), timeout=timeout) as client,
        streamable_http_client(server.url, http_client=client) as (read, write),
    ):
        yield WatchedStream(read, ended), write
