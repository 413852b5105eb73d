"""MCP tools: the tools of Model Context Protocol servers, through the official ``mcp`` SDK.

Needs the ``mcp`` extra (``pip install 'trio-agent[mcp]'``)::

    async with trio_agent.open_runtime(
        model=model,
        mcp=[McpServer(command=["python", "server.py"]), McpServer(url="http://127.0.0.1:8000/mcp")],
    ) as runtime:
        ...  # the servers' tools are the runtime's, beside its own

- :mod:`.server` — :class:`McpServer`: which server, and how (no SDK needed);
- :mod:`.toolset` — :class:`McpTools`: a runtime's servers, their tools by name;
- :mod:`.connection` — :class:`McpConnection`: one server's connection, its calls,
  its restarts;
- :mod:`.transport` — the SDK's stdio or streamable-HTTP streams, watched;
- :mod:`.content` — a call's result as the model reads it.

The names that need the SDK are imported when first used, so that the runtime and the
command line work without the extra when no server is given.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .server import CONNECT_TIMEOUT, MAX_RESTARTS, RESTART_BACKOFF, RESTART_BACKOFF_MAX, McpServer

if TYPE_CHECKING:
    from .connection import McpConnection
    from .toolset import McpTools

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_RESTARTS",
    "RESTART_BACKOFF",
    "RESTART_BACKOFF_MAX",
    "McpConnection",
    "McpServer",
    "McpTools",
]

_LAZY = {"McpTools": ".toolset", "McpConnection": ".connection"}

INSTALL_HINT = "pip install 'trio-agent[mcp]'"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module, __name__), name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (exc.name == "mcp" or exc.name.startswith("mcp")):
            raise
        raise ModuleNotFoundError(
            f"trio_agent.tools.mcp.{name} needs the MCP SDK, which is not installed: "
            f"{INSTALL_HINT}",
            name="mcp",
        ) from None
