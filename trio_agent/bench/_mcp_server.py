"""The MCP server of the ``mcp`` benchmark, written with the SDK's ``MCPServer``.

``python -m trio_agent.bench._mcp_server`` serves over stdio; with ``--http``, streamable
HTTP on a free loopback port, printed as the first line of stdout.  Its tools: ``add``
(the very function the benchmark also offers as a local tool) and ``wait`` (reports
progress once, then sleeps: a call to interrupt).  It lives in the package because the
benchmark, which ships with it, starts it (``child_command``, ``cwd=CHILD_CWD``).
"""

from __future__ import annotations

import socket
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer

from .mcp import add


def build() -> MCPServer:
    server = MCPServer("bench", log_level="WARNING")
    server.add_tool(add)

    @server.tool()
    async def wait(seconds: float, ctx: Context) -> str:
        """Say the call started, then sleep."""
        await ctx.report_progress(0, None, "started")
        await anyio.sleep(seconds)
        return "waited"

    return server


def main() -> None:
    server = build()
    if "--http" not in sys.argv[1:]:
        server.run()
        return
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
