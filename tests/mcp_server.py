"""A real MCP server for the tests, written with the SDK's own ``MCPServer``.

``python tests/mcp_server.py [--name NAME] [--state DIR]`` serves over stdio;
``--http [--port N]`` serves streamable HTTP on a loopback port (a free one by default),
printed as the first line of stdout (uvicorn on asyncio, in this process).  Its tools
exercise what the runtime must handle: results (structured, text blocks, ``isError``),
progress, cancellation (one tool records the cancels it saw, one ignores them), a
server that dies mid-call (and one that then cannot start again: ``--state DIR`` holds
its marker), tools/list_changed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build(name: str, state: Path | None) -> MCPServer:
    server = MCPServer(name, log_level="WARNING")
    cancelled: list[str] = []

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool(structured_output=False)
    def lines(words: list[str]) -> list[str]:
        """Each word as a text block of its own."""
        return words

    @server.tool()
    def fail(message: str) -> str:
        """Fail with the message."""
        raise ToolError(message)

    @server.tool()
    async def wait(seconds: float, label: str, ctx: Context) -> str:
        """Wait, reporting progress; a cancel is recorded under the label."""
        steps = 4
        await ctx.report_progress(0, steps, "started")
        try:
            for i in range(1, steps + 1):
                await anyio.sleep(seconds / steps)
                await ctx.report_progress(i, steps, f"{i} of {steps}")
        except anyio.get_cancelled_exc_class():
            cancelled.append(label)
            raise
        return f"waited {seconds:g}"

    @server.tool()
    async def stubborn(seconds: float, ctx: Context) -> str:
        """Wait, ignoring any cancel."""
        await ctx.report_progress(0, None, "started")
        with anyio.CancelScope(shield=True):
            await anyio.sleep(seconds)
        return "stubborn"

    @server.tool()
    def cancels() -> list[str]:
        """The labels of the calls of wait that were cancelled."""
        return cancelled

    @server.tool()
    def pid() -> int:
        """This server's process id."""
        return os.getpid()

    @server.tool()
    async def crash(ctx: Context, for_good: bool = False) -> str:
        """Die in the middle of the call, killed (for good: and fail every start after)."""
        await ctx.report_progress(0, None, "started")
        if for_good and state is not None:
            (state / "dead").write_text("dead")
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("not dead")

    @server.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool called name (it doubles x) and say the tools changed."""

        def double(x: int) -> int:
            return 2 * x

        server.add_tool(double, name=name, description="Double x.")
        await ctx.notify_tools_changed()  # the 2026 revision: to subscriptions/listen
        await ctx.request_context.session.send_tool_list_changed()  # the 2025 revisions
        return "grown"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="testing")
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.state is not None and (args.state / "dead").exists():
        print("mcp_server: dead for good", file=sys.stderr)
        sys.exit(1)
    server = build(args.name, args.state)
    if not args.http:
        server.run()
        return
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
