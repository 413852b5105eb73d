"""One MCP server's connection: :class:`McpConnection`.

Ownership.  :meth:`McpConnection.run` is one task (the runtime starts it in its
nursery) and it alone enters and leaves the SDK's client — the transport's tasks, the
subprocess, the HTTP session — so no cancel scope of the SDK is ever entered in one
task and left in another (the SDK's issue #915).  Inside the client it owns a nursery,
the *calls* nursery: the tasks that list tools again when the server says they changed,
and one task per tool call.  Leaving the runtime cancels ``run``: the calls end, the
client closes (a subprocess gets its stdin closed, then is terminated), and nothing of
the server outlives the runtime.

A call (:meth:`McpConnection.call`, awaited by the tool call's own task in the step's
nursery) starts its request as a task of the calls nursery and waits for it, publishing
the server's progress notifications as ``tool_progress`` events as they come (the
newest only, while the previous one is being published).  When the step is cancelled
(a hard interrupt, a cancel, a timeout) the waiting task returns at once, cancelling the
request's task on its way out: the SDK tells the server (``notifications/cancelled``;
on streamable HTTP at the 2026 revision, by closing the request's stream) from the
connection's task, so a server that ignores the cancel, or a pipe it does not read,
cannot hold the step.  The connection stays as it was, for the next call.

A server that goes (a subprocess that exits, a URL that stops answering) ends the calls
in flight ``error``, naming it.  The next call starts it again: up to ``max_restarts``
attempts, :data:`~.server.RESTART_BACKOFF` apart and doubling, each one an ``error``
event with code ``mcp_restart`` (``retryable``) in the calling session; when none
succeeds the call ends ``error`` and the call after tries again.  Its tools are listed
again on every start, and whenever it says they changed
(``notifications/tools/list_changed``; at the 2026 revision through a
``subscriptions/listen`` stream).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs
import mcp_types as types
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..context import ToolCallContext
from ..execute import ToolOutcome
from .content import outcome_of
from .server import RESTART_BACKOFF, RESTART_BACKOFF_MAX, McpServer, tool_name
from .transport import open_transport

__all__ = ["MAX_LIST_PAGES", "RESTART_CODE", "McpConnection", "RemoteTool", "describe_error"]

logger = logging.getLogger("trio_agent")

MAX_LIST_PAGES: Final = 100
"""Pages of ``tools/list`` read per listing: a server that pages forever cannot hang a
start (servers send all their tools in one page or a few)."""

RESTART_CODE: Final = "mcp_restart"
"""The code of the ``error`` event (``retryable``) of each attempt to start a server
again."""

GONE: Final = "it exited or closed the connection"
"""Why a server whose connection ended by itself is gone."""

State = Literal["starting", "ready", "down", "failed"]


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2 …) to start a server."""
    return float(min(RESTART_BACKOFF * 2 ** (attempt - 1), RESTART_BACKOFF_MAX))


@attrs.frozen(slots=True)
class RemoteTool:
    """A tool as the server lists it."""

    name: str
    description: str
    input_schema: dict[str, Any]


def describe_error(exc: BaseException) -> str:
    """What failed, in a line: the first exception that is not a group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        if exc.error.code == types.CONNECTION_CLOSED:
            return f"{GONE} (MCP error {exc.error.code})"
        return f"{exc.error.message} (MCP error {exc.error.code})"
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _Call:
    """One request in flight: its task's scope, what came back, the newest progress."""

    __slots__ = ("done", "error", "pending", "result", "scope", "wake")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = False
        self.result: types.CallToolResult | None = None
        self.error: BaseException | None = None
        self.pending: tuple[float, float | None, str | None] | None = None
        self.wake = trio.Event()

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """The SDK's progress callback (run by the connection's tasks): keep the newest."""
        self.pending = (progress, total, message)
        self.wake.set()


class McpConnection:
    """The connection to one MCP server (see the module): its tools, its calls."""

    def __init__(self, server: McpServer, on_tools: Callable[[], None]) -> None:
        self.server = server
        self.name = server.name or ""
        """Its name (``McpServer.name``, else the one it gives once connected)."""
        self.tools: tuple[RemoteTool, ...] = ()
        """Its tools, as it last listed them."""
        self.protocol_version: str | None = None
        self.starts = 0
        """Connections made (the first, then each restart that succeeded)."""
        self._on_tools = on_tools
        self._state: State = "starting"
        self._attempt = 0
        self._why = ""  # why it is down, or why the last attempt failed
        self._failed_rounds = 0
        self._changed = trio.Event()
        self._wanted = trio.Event()
        self._relist = trio.Event()
        self._client: Client | None = None
        self._calls: trio.Nursery | None = None
        self._ended = trio.Event()

    @property
    def label(self) -> str:
        """How messages name the server: its name, or its command line or URL."""
        return self.name or self.server.describe()

    @property
    def state(self) -> State:
        """``starting``, ``ready``, ``down`` (gone; started again on the next call) or
        ``failed`` (the last attempts to start it failed)."""
        return self._state

    def _set(self, state: State, *, why: str | None = None, attempt: int | None = None) -> None:
        self._state = state
        if why is not None:
            self._why = why
        if attempt is not None:
            self._attempt = attempt
        self._changed.set()
        self._changed = trio.Event()

    # ---- the owner task -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and serve until cancelled, starting the server again when a call
        finds it gone.  ``task_status.started()`` once the first connection listed its
        tools; an exception before that is the first connection's failure."""
        await self._connect(task_status.started)
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            attempts = self.server.max_restarts
            for attempt in range(1, attempts + 1):
                self._set("starting", attempt=attempt)
                try:
                    await self._connect(lambda: None)
                    break
                except Exception as exc:
                    self._why = f"attempt {attempt} failed: {describe_error(exc)}"
                    logger.warning("MCP server %r: %s", self.label, self._why)
                    if attempt < attempts:
                        await trio.sleep(backoff(attempt))
            else:
                self._failed_rounds += 1
                self._set("failed")

    async def _connect(self, on_ready: Callable[[], None]) -> None:
        """One connection: connect and list the tools within ``connect_timeout``, then
        serve calls until the server goes (return) — or raise, before it was ready."""
        ready = False
        ended = self._ended = trio.Event()
        try:
            with trio.CancelScope(
                deadline=trio.current_time() + self.server.connect_timeout
            ) as scope:
                client = Client(
                    open_transport(self.server, ended),
                    mode=self.server.protocol,
                    cache=None,
                    message_handler=self._on_message,
                )
                async with client, trio.open_nursery() as calls:
                    self.protocol_version = client.protocol_version
                    if not self.name and client.server_info is not None:
                        self.name = tool_name(client.server_info.name)
                    listens = (
                        client.protocol_version in MODERN_PROTOCOL_VERSIONS
                        and (caps := client.server_capabilities.tools) is not None
                        and caps.list_changed
                    )
                    if listens:
                        await calls.start(self._listen, client)
                    self._set_tools(await self._list(client))
                    scope.deadline = math.inf
                    self._client, self._calls = client, calls
                    ready = True
                    self.starts += 1
                    self._set("ready")
                    calls.start_soon(self._relister, client)
                    on_ready()
                    await ended.wait()
                    self._went(GONE)
                    calls.cancel_scope.cancel()
            if not ready:
                raise TimeoutError(
                    f"it did not connect and list its tools within "
                    f"{self.server.connect_timeout:g} seconds (connect_timeout)"
                )
        except Exception as exc:
            if not ready:
                raise
            logger.debug("MCP server %r: its connection failed", self.label, exc_info=exc)
            self._went(f"its connection failed: {describe_error(exc)}")
        finally:
            self._client = self._calls = None
            if self._state == "ready":  # (cancelled: the runtime is closing)
                self._set("down", why="the runtime closed it")

    def _went(self, why: str) -> None:
        """The server is gone: no new calls on this connection; the next one restarts."""
        self._client = self._calls = None
        if self._state == "ready":
            logger.warning("MCP server %r: %s", self.label, why)
            self._set("down", why=why)

    async def _on_message(self, message: Any) -> None:
        """The SDK's message handler: a tools/list_changed notification asks for a
        new listing (the relister lists once however many come meanwhile)."""
        if isinstance(message, types.ToolListChangedNotification):
            self._relist.set()
        await trio.lowlevel.checkpoint()

    async def _listen(self, client: Client, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep a ``subscriptions/listen`` stream for tools/list_changed open (the
        2026 revision delivers change notifications only through one)."""
        started = False
        try:
            async with client.listen(tools_list_changed=True) as changes:
                task_status.started()
                started = True
                async for _ in changes:
                    self._relist.set()
        except Exception as exc:  # not offered, or the connection is going: no listing
            logger.debug(
                "MCP server %r: no tools/list_changed stream: %s", self.label, describe_error(exc)
            )
            if not started:
                task_status.started()

    async def _relister(self, client: Client) -> None:
        while True:
            await self._relist.wait()
            self._relist = trio.Event()
            try:
                tools = await self._list(client)
            except MCPError as exc:
                logger.warning(
                    "MCP server %r: listing its tools again failed: %s",
                    self.label,
                    describe_error(exc),
                )
                continue
            self._set_tools(tools)

    async def _list(self, client: Client) -> tuple[RemoteTool, ...]:
        tools: list[RemoteTool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(
                RemoteTool(t.name, t.description or t.title or "", dict(t.input_schema))
                for t in page.tools
            )
            cursor = page.next_cursor
            if cursor is None:
                break
        else:
            logger.warning(
                "MCP server %r: listed its first %d pages of tools only (MAX_LIST_PAGES)",
                self.label,
                MAX_LIST_PAGES,
            )
        return tuple(tools)

    def _set_tools(self, tools: tuple[RemoteTool, ...]) -> None:
        if tools != self.tools:
            self.tools = tools
            self._on_tools()

    # ---- calls --------------------------------------------------------------------------

    async def call(
        self, tool: str, arguments: dict[str, Any], context: ToolCallContext
    ) -> ToolOutcome:
        """Call ``tool`` with ``arguments`` (see the module); the outcome for the model.
        Cancelled, it returns at once: the request is cancelled by the connection."""
        ready = await self._ready(context)
        if isinstance(ready, ToolOutcome):
            return ready
        client, calls = ready
        call = _Call()
        calls.start_soon(self._request, client, call, tool, arguments)
        try:
            while True:
                await call.wake.wait()
                call.wake = trio.Event()
                if call.pending is not None:  # (also the last one, before the result)
                    progress, call.pending = call.pending, None
                    await context.progress(*progress)
                if call.done:
                    break
        finally:
            call.scope.cancel()  # (done: nothing to cancel)
        return self._outcome(call, tool)

    async def _ready(self, context: ToolCallContext) -> tuple[Client, trio.Nursery] | ToolOutcome:
        """The connection, once ready (starting the server again if it is gone), or the
        outcome of a call that cannot be made."""
        failed_before = self._failed_rounds
        announced = 0
        while True:
            if self._state == "ready" and self._ended.is_set():
                self._went(GONE)  # (before the owner task noticed)
            client, calls = self._client, self._calls
            if self._state == "ready" and client is not None and calls is not None:
                return client, calls
            if self._state == "failed" and self._failed_rounds > failed_before:
                return ToolOutcome.failed(
                    f"MCP server {self.label!r} is gone and could not be started again "
                    f"({self.server.max_restarts} attempts; {self._why}); the next call "
                    "tries again"
                )
            if self._state in ("down", "failed"):
                self._wanted.set()
            elif self._state == "starting" and self._attempt != announced:
                announced = self._attempt
                await context.notice(
                    RESTART_CODE,
                    f"MCP server {self.label!r}: {self._why}; starting it again "
                    f"(attempt {announced} of {self.server.max_restarts})",
                )
                continue
            await self._changed.wait()

    async def _request(
        self, client: Client, call: _Call, tool: str, arguments: dict[str, Any]
    ) -> None:
        """The request of one call, a task of the calls nursery."""
        try:
            with call.scope:
                call.result = await client.call_tool(
                    tool, arguments, progress_callback=call.progress
                )
        except Exception as exc:
            call.error = exc
        finally:
            call.done = True
            call.wake.set()

    def _outcome(self, call: _Call, tool: str) -> ToolOutcome:
        if call.result is not None:
            return outcome_of(call.result, self.label, tool)
        error = call.error
        if error is None or (
            isinstance(error, MCPError) and error.error.code == types.CONNECTION_CLOSED
        ):
            return ToolOutcome.failed(
                f"MCP server {self.label!r} went away during the call ({GONE}); "
                "it is started again on the next call"
            )
        return ToolOutcome.failed(f"MCP server {self.label!r}: {describe_error(error)}")
