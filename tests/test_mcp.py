"""MCP tools (DESIGN §11) against real MCP servers started by the tests.

The servers are ``tests/mcp_server.py``, written with the SDK's own ``MCPServer``:
over stdio (a subprocess per runtime) and over streamable HTTP (one subprocess for the
module, uvicorn on a free loopback port).  No transport is mocked.  The servers are
real processes, so time is real: every wait is on an event (the server's first
progress notification says a call is in flight), and every test is bounded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_agent
from trio_agent import Session, tool
from trio_agent import events as ev
from trio_agent.errors import McpServerError
from trio_agent.testing import ScriptBuilder, check_invariants
from trio_agent.tools import McpServer, ToolOutcome, execute_tool
from trio_agent.tools.mcp.server import tool_name

pytestmark = pytest.mark.timeout(60)

SERVER = Path(__file__).with_name("mcp_server.py")
BOUND = 20.0
"""Seconds any one wait on a real server may take on a loaded machine."""


def stdio(*args: str, **options: Any) -> McpServer:
    return McpServer(command=[sys.executable, str(SERVER), *args], **options)


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """One MCP server over streamable HTTP for the module: its URL."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", "--name", "web"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def call(call_id: str, tool_name: str, /, **arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "name": tool_name, "arguments": arguments}


@asynccontextmanager
async def running(
    builder: ScriptBuilder, *servers: McpServer, **options: Any
) -> AsyncIterator[tuple[trio_agent.Runtime, Session]]:
    with trio.fail_after(BOUND):
        async with trio_agent.open_runtime(
            model=builder.model(), mcp=list(servers), **options
        ) as rt:
            yield rt, await rt.open_session("s1")


async def next_event(events: Any, kind: str, **fields: Any) -> Any:
    """The next event of ``kind`` (with ``fields``), within ``BOUND``."""
    with trio.fail_after(BOUND):
        async for e in events:
            if e.type == kind and all(getattr(e, k) == v for k, v in fields.items()):
                return e
    raise AssertionError(f"the session ended before a {kind!r} event")


async def direct(rt: trio_agent.Runtime, name: str, **arguments: Any) -> ToolOutcome:
    """Call a tool of the runtime outside any session (a second client of the server)."""
    with trio.fail_after(BOUND):
        return await execute_tool(rt.registry, name, arguments, limiter=rt.limiter, timeout=BOUND)


def results(session: Session) -> dict[str, ev.ToolResult]:
    return {e.call_id: e for e in session.log if isinstance(e, ev.ToolResult)}


async def until_done(session: Session) -> None:
    async with session.subscribe(after=0) as events:
        await next_event(events, "done")
    check_invariants(list(session.log), session.state)


# ---- servers and results, without a server -------------------------------------------


@pytest.mark.parametrize(
    ("spec", "server"),
    [
        ("http://127.0.0.1:8000/mcp", McpServer(url="http://127.0.0.1:8000/mcp")),
        (" HTTPS://example.com/mcp ", McpServer(url="HTTPS://example.com/mcp")),
        ("python server.py --flag", McpServer(command=["python", "server.py", "--flag"])),
        ("npx -y 'my server' \"a b\"", McpServer(command=["npx", "-y", "my server", "a b"])),
    ],
)
def test_a_server_from_the_command_line(spec: str, server: McpServer) -> None:
    assert McpServer.parse(spec) == server
    assert McpServer.parse(server.describe()) == server


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "an MCP server is a command or a URL: give exactly one of the two"),
        ({"command": ["x"], "url": "http://h/"}, "an MCP server is a command or a URL: give"),
        ({"command": []}, "MCP server command must be a non-empty list of arguments, got []"),
        ({"command": "python s.py"}, "MCP server command must be a list of arguments, got the"),
        ({"url": "ftp://h/mcp"}, "MCP server URL must be http:// or https://, got 'ftp://h/mcp'"),
        ({"url": "http://h/", "cwd": "/"}, "env and cwd are for an MCP server command, not a"),
        ({"command": ["x"], "headers": {}}, "headers are for an MCP server at a URL, not a"),
        ({"command": ["x"], "name": "a b"}, "MCP server name 'a b' is not allowed: use 1 to 64"),
        ({"command": ["x"], "timeout": 0}, "MCP server timeout must be a positive number of"),
        ({"command": ["x"], "max_restarts": 0}, "MCP server max_restarts must be >= 1, got 0"),
        ({"command": ["x"], "protocol": "v1"}, "MCP server protocol must be 'auto' or 'legacy'"),
    ],
)
def test_a_bad_server_is_refused_saying_why(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        McpServer(**options)


def test_results_as_the_model_reads_them() -> None:
    import mcp_types as types

    from trio_agent.tools.mcp.content import outcome_of

    def result(*blocks: Any, **fields: Any) -> types.CallToolResult:
        return types.CallToolResult(content=list(blocks), **fields)

    text = types.TextContent(type="text", text="hello")
    image = types.ImageContent(type="image", data="aGVsbG8=", mime_type="image/png")
    blob = types.BlobResourceContents(uri="file:///a.bin", blob="AAAA", mime_type=None)
    mixed = result(
        text,
        image,
        types.EmbeddedResource(
            type="resource", resource=types.TextResourceContents(uri="file:///a", text="inside")
        ),
        types.EmbeddedResource(type="resource", resource=blob),
        types.ResourceLink(type="resource_link", uri="file:///b", name="b"),
    )
    assert outcome_of(mixed, "s", "t") == ToolOutcome(
        "ok",
        "hello\n[image: image/png, 5 bytes]\ninside\n"
        "[resource file:///a.bin: application/octet-stream, 3 bytes]\n[resource link: file:///b]",
    )
    assert outcome_of(result(text, structured_content={"n": 1}), "s", "t").result == {"n": 1}
    assert outcome_of(result(text, is_error=True), "s", "t") == ToolOutcome.failed("hello")
    assert outcome_of(result(is_error=True), "s", "t") == ToolOutcome.failed(
        "MCP tool 't' of server 's' failed"
    )
    assert outcome_of(result(), "s", "t") == ToolOutcome("ok", "")


@pytest.mark.parametrize(
    ("text", "name"),
    [("search", "search"), ("files.read", "files_read"), ("a/b c", "a_b_c"), ("..", "mcp")],
)
def test_names_a_model_may_call(text: str, name: str) -> None:
    assert tool_name(text) == name
    assert tool_name("x" * 80) == "x" * 64


# ---- the tools, as the server gives them ----------------------------------------------


async def test_names_descriptions_schemas_and_results_come_from_the_server() -> None:
    script = ScriptBuilder().turn(
        tool_calls=[
            call("c1", "add", a=2, b=40),
            call("c2", "lines", words=["one", "two"]),
            call("c3", "fail", message="no such file"),
            call("c4", "add", a="two", b=1),
        ]
    )
    async with running(script.turn(tokens=["done"]), stdio()) as (rt, session):
        add = rt.registry.get("add")
        assert add is not None and add.description == "Add two integers."
        assert add.parameters["properties"]["a"] == {"title": "A", "type": "integer"}
        assert add.parameters["required"] == ["a", "b"]
        assert {"add", "lines", "fail", "wait", "cancels"} <= set(rt.registry.names())
        await session.send("go")
        await until_done(session)
    got = results(session)
    assert (got["c1"].status, got["c1"].result) == ("ok", {"result": 42})  # structured
    assert (got["c2"].status, got["c2"].result) == ("ok", "one\ntwo")  # text, joined
    assert (got["c3"].status, got["c3"].error) == (
        "error",
        "Error executing tool fail: no such file",
    )
    # Validated against the server's schema before the call, as for our own tools:
    assert got["c4"].status == "error"
    assert got["c4"].error is not None
    assert got["c4"].error.startswith("invalid arguments for tool 'add' at $.a: 'two' is not")


async def test_names_clashing_between_servers_and_with_own_tools_are_prefixed(
    http_url: str,
) -> None:
    @tool
    def pid() -> str:
        """Our own tool, with the name of a tool of the servers."""
        return "ours"

    script = ScriptBuilder().turn(tool_calls=[call("c1", "pid"), call("c2", "web_add", a=1, b=2)])
    servers = (stdio(name="local"), McpServer(url=http_url))
    async with running(script.turn(tokens=["done"]), *servers, tools=[pid]) as (rt, session):
        names = set(rt.registry.names())
        assert {"pid", "local_pid", "web_pid", "local_add", "web_add"} <= names
        assert "add" not in names  # both servers have it: both prefixed
        assert [c.name for c in rt.mcp.connections] == ["local", "web"]  # type: ignore[union-attr]
        await session.send("go")
        await until_done(session)
    got = results(session)
    assert got["c1"].result == "ours" and got["c2"].result == {"result": 3}


# ---- progress -------------------------------------------------------------------------


async def test_progress_notifications_become_tool_progress_events(http_url: str) -> None:
    script = ScriptBuilder().turn(tool_calls=[call("c1", "wait", seconds=0.2, label="p")])
    async with running(script.turn(tokens=["done"]), McpServer(url=http_url)) as (_, session):
        await session.send("go")
        await until_done(session)
    progress = [e for e in session.log if isinstance(e, ev.ToolProgress)]
    assert (progress[0].call_id, progress[0].progress, progress[0].total) == ("c1", 0.0, 4.0)
    assert progress[0].message == "started"
    # The newest of those that came while one was being published (here: most of them).
    assert len(progress) >= 2
    assert [e.message for e in progress[1:]] == [f"{int(e.progress)} of 4" for e in progress[1:]]
    assert [e.progress for e in progress] == sorted({e.progress for e in progress})
    (last_call,) = [m for m in session.state.messages if m.role == "tool"]
    assert last_call.content == '{"result":"waited 0.2"}'
    log = [e.type for e in session.log]
    assert log.index("tool_progress") > log.index("tool_call")
    assert max(i for i, t in enumerate(log) if t == "tool_progress") < log.index("tool_result")


# ---- interrupts -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["stdio", "http"])
async def test_a_hard_interrupt_cancels_the_call_tells_the_server_and_keeps_it(
    where: str, http_url: str
) -> None:
    label = f"hard-{where}"
    server = stdio() if where == "stdio" else McpServer(url=http_url)
    script = ScriptBuilder().turn(tool_calls=[call("c1", "wait", seconds=60, label=label)])
    async with running(script.turn(tokens=["done"]), server) as (rt, session):
        async with session.subscribe(after=0) as events:
            await session.send("go")
            await next_event(events, "tool_progress", call_id="c1")  # in flight on the server
            with trio.fail_after(5):  # "at once": far less than the call's 60 s
                await session.interrupt(mode="hard", reason="stop")
                result = await next_event(events, "tool_result", call_id="c1")
                await next_event(events, "interrupted")
        assert result.status == "cancelled"
        # The server was told: its handler saw the cancel; the same connection answers.
        told = await direct(rt, "cancels")
        assert told.status == "ok" and label in told.result["result"]
        assert rt.mcp is not None and rt.mcp.connections[0].starts == 1
        await session.resume()
        await until_done(session)


async def test_a_server_that_ignores_the_cancel_cannot_hold_the_step() -> None:
    script = ScriptBuilder().turn(tool_calls=[call("c1", "stubborn", seconds=60)])
    async with running(script.turn(tokens=["done"]), stdio()) as (rt, session):
        async with session.subscribe(after=0) as events:
            await session.send("go")
            await next_event(events, "tool_progress", call_id="c1")
            with trio.fail_after(5):
                await session.interrupt(mode="hard")
                result = await next_event(events, "tool_result", call_id="c1")
                await next_event(events, "interrupted")
        assert result.status == "cancelled"
        # The server still runs that handler; the connection serves the next call.
        pid = await direct(rt, "pid")
        assert pid.status == "ok"
    # Leaving the runtime ended the server, stubborn handler and all.
    with pytest.raises(ProcessLookupError):
        os.kill(pid.result["result"], 0)


async def test_a_soft_interrupt_lets_the_call_run_to_its_end() -> None:
    script = ScriptBuilder().turn(tool_calls=[call("c1", "wait", seconds=0.4, label="soft")])
    async with (
        running(script.turn(tokens=["done"]), stdio()) as (_, session),
        session.subscribe(after=0) as events,
    ):
        await session.send("go")
        await next_event(events, "tool_progress", call_id="c1")
        await session.interrupt(mode="soft")
        result = await next_event(events, "tool_result", call_id="c1")
        await next_event(events, "interrupted")
    assert (result.status, result.result) == ("ok", {"result": "waited 0.4"})


async def test_a_call_past_its_timeout_ends_timeout_and_the_server_is_told() -> None:
    script = ScriptBuilder().turn(tool_calls=[call("c1", "wait", seconds=60, label="late")])
    async with running(script.turn(tokens=["done"]), stdio(timeout=1.0)) as (rt, session):
        await session.send("go")
        await until_done(session)
        assert results(session)["c1"].status == "timeout"
        assert results(session)["c1"].error == "tool 'wait' timed out after 1 seconds"
        told = await direct(rt, "cancels")
        assert "late" in told.result["result"]


# ---- approval -------------------------------------------------------------------------


async def test_an_mcp_tool_waits_for_approval_like_our_own() -> None:
    script = ScriptBuilder().turn(
        tool_calls=[call("c1", "add", a=1, b=1), call("c2", "pid"), call("c3", "lines", words=[])]
    )
    # Every tool of the server needs approval, but the runtime's word on `lines` wins.
    server = stdio(approval=True)
    opened = running(script.turn(tokens=["done"]), server, approval={"lines": False})
    async with opened as (_, session), session.subscribe(after=0) as events:
        await session.send("go")
        await next_event(events, "tool_approval_requested", call_id="c2")
        await session.approve("c1")
        await session.deny("c2", "not that one")
        await next_event(events, "done")
    got = results(session)
    assert (got["c1"].status, got["c1"].result) == ("ok", {"result": 2})
    assert (got["c2"].status, got["c2"].error) == ("denied", "denied: not that one")
    assert (got["c3"].status, got["c3"].result) == ("ok", "")
    asked = {e.call_id for e in session.log if isinstance(e, ev.ToolApprovalRequested)}
    assert asked == {"c1", "c2"}


# ---- a server that dies ---------------------------------------------------------------


async def test_a_server_that_dies_mid_call_ends_it_error_and_restarts_on_the_next() -> None:
    script = (
        ScriptBuilder()
        .turn(tool_calls=[call("c1", "crash")])
        .turn(tool_calls=[call("c2", "add", a=3, b=4)])
        .turn(tokens=["done"])
    )
    async with running(script, stdio(name="fragile")) as (rt, session):
        await session.send("go")
        await until_done(session)
        assert rt.mcp is not None and rt.mcp.connections[0].starts == 2
    got = results(session)
    assert got["c1"].status == "error"
    assert got["c1"].error is not None and got["c1"].error.startswith(
        "MCP server 'fragile' went away during the call (it exited or closed the connection)"
    )
    restarts = [e for e in session.log if isinstance(e, ev.Error) and e.code == "mcp_restart"]
    assert [(e.retryable, e.message) for e in restarts] == [
        (
            True,
            "MCP server 'fragile': it exited or closed the connection; starting it again "
            "(attempt 1 of 3)",
        )
    ]
    assert (got["c2"].status, got["c2"].result) == ("ok", {"result": 7})


async def test_a_server_at_a_url_that_goes_is_connected_to_again() -> None:
    def start(port: int = 0) -> tuple[subprocess.Popen[str], int]:
        argv = [sys.executable, str(SERVER), "--http", "--port", str(port)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline())

    script = (
        ScriptBuilder()
        .turn(tool_calls=[call("c1", "crash")])
        .turn(tokens=["crashed"])
        .turn(tool_calls=[call("c2", "add", a=1, b=2)])
        .turn(tokens=["done"])
    )
    proc, port = start()
    try:
        server = McpServer(url=f"http://127.0.0.1:{port}/mcp", name="remote")
        async with running(script, server) as (rt, session):
            await session.send("crash")
            await until_done(session)
            proc.wait(BOUND)
            proc, _ = start(port)  # back, on the same port
            await session.send("again")
            async with session.subscribe() as events:
                await next_event(events, "done")
            assert rt.mcp is not None and rt.mcp.connections[0].starts == 2
    finally:
        proc.terminate()
        proc.wait(BOUND)
    got = results(session)
    assert got["c1"].status == "error" and got["c1"].error is not None
    assert got["c1"].error.startswith("MCP server 'remote' went away during the call")
    assert (got["c2"].status, got["c2"].result) == ("ok", {"result": 3})
    restarts = [e.message for e in session.log if isinstance(e, ev.Error) and e.retryable]
    assert len(restarts) == 1 and restarts[0].endswith("starting it again (attempt 1 of 3)")


async def test_a_server_at_a_url_that_restarted_between_calls_is_connected_to_again() -> None:
    """Killed while idle and started again on the same port: the next call succeeds."""

    def start(port: int = 0) -> tuple[subprocess.Popen[str], int]:
        argv = [sys.executable, str(SERVER), "--http", "--port", str(port)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline())

    script = (
        ScriptBuilder()
        .turn(tool_calls=[call("c1", "add", a=1, b=1)])
        .turn(tokens=["two"])
        .turn(tool_calls=[call("c2", "add", a=2, b=2)])
        .turn(tokens=["four"])
    )
    proc, port = start()
    try:
        server = McpServer(url=f"http://127.0.0.1:{port}/mcp", name="remote")
        async with running(script, server) as (_, session):
            await session.send("first")
            await until_done(session)
            proc.kill()  # (a graceful stop would wait for the client's open stream)
            proc.wait(BOUND)
            proc, _ = start(port)  # a new process on the same port: a new session table
            await session.send("again")
            async with session.subscribe() as events:
                await next_event(events, "done")
    finally:
        proc.terminate()
        proc.wait(BOUND)
    got = results(session)
    assert (got["c1"].status, got["c1"].result) == ("ok", {"result": 2})
    assert (got["c2"].status, got["c2"].result) == ("ok", {"result": 4})


async def test_restarts_are_bounded_each_attempt_an_event(tmp_path: Path) -> None:
    script = (
        ScriptBuilder()
        .turn(tool_calls=[call("c1", "crash", for_good=True)])
        .turn(tool_calls=[call("c2", "add", a=3, b=4)])
        .turn(tokens=["done"])
    )
    server = stdio("--state", str(tmp_path), name="doomed", max_restarts=2)
    async with running(script, server) as (rt, session):
        await session.send("go")
        await until_done(session)
        assert rt.mcp is not None and rt.mcp.connections[0].state == "failed"
    restarts = [e.message for e in session.log if isinstance(e, ev.Error) and e.retryable]
    assert len(restarts) == 2
    assert restarts[1].startswith("MCP server 'doomed': attempt 1 failed: ")
    assert restarts[1].endswith("; starting it again (attempt 2 of 2)")
    error = results(session)["c2"].error
    assert error is not None and error.startswith(
        "MCP server 'doomed' is gone and could not be started again (2 attempts; attempt 2 failed"
    )


# ---- tools that change ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_tools_list_changed_lists_them_again(protocol: str) -> None:
    script = (
        ScriptBuilder()
        .turn(tool_calls=[call("c1", "grow", name="double")])
        .turn(tokens=["grown"])
        .turn(tool_calls=[call("c2", "double", x=21)])  # the next run: the new tool
        .turn(tokens=["done"])
    )
    async with running(script, stdio(protocol=protocol)) as (rt, session):
        assert rt.mcp is not None and "double" not in rt.registry
        version = rt.mcp.version
        await session.send("grow")
        with trio.fail_after(BOUND):
            await rt.mcp.wait_changed(version)
        assert "double" in rt.registry
        assert "double" in [spec.name for spec in rt.registry.specs()]  # the next step's
        await until_done(session)
        await session.send("use it")
        async with session.subscribe() as events:
            await next_event(events, "done")
        expected = "2026-07-28" if protocol == "auto" else "2025-11-25"
        assert rt.mcp.connections[0].protocol_version == expected
    assert results(session)["c2"].result == {"result": 42}


# ---- the runtime owns the connections -------------------------------------------------


async def test_leaving_the_runtime_ends_every_server(http_url: str) -> None:
    async with running(ScriptBuilder(), stdio(name="a"), stdio(name="b")) as (rt, _):
        pids = [(await direct(rt, f"{n}_pid")).result["result"] for n in "ab"]
        for pid in pids:
            os.kill(pid, 0)  # running
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (["/nonexistent/mcp-server"], "FileNotFoundError: [Errno 2] No such file or directory"),
        ([sys.executable, "-c", "pass"], "it exited or closed the connection (MCP error -32000)"),
    ],
)
async def test_a_server_that_cannot_start_fails_the_runtime_opening(
    command: list[str], why: str
) -> None:
    server = McpServer(command=command)
    with trio.fail_after(BOUND), pytest.raises(McpServerError) as info:
        async with trio_agent.open_runtime(mcp=[server]):
            raise AssertionError("opened")
    assert str(info.value).startswith(
        f"MCP server {server.describe()!r} could not be started: {why}"
    )
