"""``McpTools``: the MCP servers of a runtime, and their tools as :class:`~..tool.Tool`\\ s.

:meth:`McpTools.run` is the task the runtime starts in its nursery: it connects to every
server at once (``task_status.started()`` once each has listed its tools; a server that
cannot be started is an :class:`~trio_agent.errors.McpServerError` for the runtime's
opener) and then owns each server's connection task until cancelled.

Names.  A tool keeps the name its server gives it (with any character a model's tool
name may not have made ``_``), unless another server, or one of the runtime's own
tools, has a tool of that name: then each MCP tool of that name is prefixed with its
server's name (``files_search``, ``web_search``); the runtime's own tools keep theirs.
A server's name is ``McpServer.name``, else the one the server gives itself (two of the
same get ``_2``, ``_3`` …).  When a server lists its tools again, :meth:`tools` changes
(and :attr:`version` counts up): the runtime offers the new list from the next step on.
A tool whose input schema is not a valid JSON schema is left out, with a warning.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

import trio

from ...errors import McpServerError
from ..tool import Tool
from .connection import McpConnection, describe_error
from .server import McpServer, tool_name

__all__ = ["DEFAULT_SERVER_NAME", "McpTools"]

logger = logging.getLogger("trio_agent")

DEFAULT_SERVER_NAME: Final = "mcp"
"""A server's name when it gives none and was given none."""


class McpTools:
    """The MCP servers of one runtime (see the module).  ``reserved``: the names of the
    runtime's own tools, which MCP tools do not take."""

    def __init__(self, servers: Sequence[McpServer], *, reserved: Iterable[str] = ()) -> None:
        named = [s.name for s in servers if s.name is not None]
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise ValueError(f"two MCP servers are named {twice[0]!r}; give each its own name")
        self.connections = tuple(McpConnection(s, self._listed) for s in servers)
        """One per server, in the order given."""
        self._reserved = frozenset(reserved)
        self._tools: tuple[Tool, ...] = ()
        self._started = False
        self._changed = trio.Event()
        self.version = 0
        """Counts the changes of :meth:`tools` (0 before the servers are connected)."""

    def tools(self) -> tuple[Tool, ...]:
        """The servers' tools, as the runtime offers them now."""
        return self._tools

    async def wait_changed(self, version: int) -> None:
        """Return once :attr:`version` is past ``version`` (the tools changed since)."""
        while self.version <= version:
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect to every server, then own their connections until cancelled."""
        failures: list[McpServerError] = []
        async with trio.open_nursery() as nursery:

            async def start(connection: McpConnection) -> None:
                try:
                    await nursery.start(connection.run)
                except Exception as exc:
                    logger.debug("MCP server %r did not start", connection.label, exc_info=exc)
                    failures.append(
                        McpServerError(
                            connection.label,
                            f"MCP server {connection.server.describe()!r} could not be "
                            f"started: {describe_error(exc)}",
                        )
                    )

            async with trio.open_nursery() as starting:
                for connection in self.connections:
                    starting.start_soon(start, connection)
            if failures:
                nursery.cancel_scope.cancel()
            else:
                self._name_servers()
                self._started = True
                self._rebuild()
                task_status.started()
        if failures:
            raise failures[0]

    def _name_servers(self) -> None:
        used: set[str] = set()
        for connection in self.connections:
            base = connection.name or DEFAULT_SERVER_NAME
            name, n = base, 2
            while name in used:
                name = tool_name(f"{base[:60]}_{n}")
                n += 1
            connection.name = name
            used.add(name)

    def _listed(self) -> None:
        """A server listed its tools (again)."""
        if self._started:
            self._rebuild()

    def _rebuild(self) -> None:
        counts = Counter(
            tool_name(t.name) for connection in self.connections for t in connection.tools
        )
        taken = set(self._reserved)
        tools: list[Tool] = []
        for connection in self.connections:
            server = connection.server
            for remote in connection.tools:
                base = tool_name(remote.name)
                clash = counts[base] > 1 or base in self._reserved
                name = tool_name(f"{connection.name}_{base}") if clash else base
                if name in taken:
                    logger.warning(
                        "MCP server %r: tool %r left out: the name %r is taken",
                        connection.name,
                        remote.name,
                        name,
                    )
                    continue
                try:
                    tools.append(
                        Tool(
                            name=name,
                            description=remote.description,
                            parameters=remote.input_schema,
                            fn=functools.partial(connection.call, remote.name),
                            is_async=True,
                            takes_context=True,
                            timeout=server.timeout,
                            approval=server.approval,
                        )
                    )
                except ValueError as exc:
                    logger.warning(
                        "MCP server %r: tool %r left out: %s", connection.name, remote.name, exc
                    )
                    continue
                taken.add(name)
        self._tools = tuple(tools)
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()
