"""The page, in a real browser: Debian's headless Chromium driven by Playwright.

The server is ``trio-agent serve`` itself, in a subprocess on a free port, with a
scripted model (a script file) and the built-in tools; Playwright's sync API drives
the page from the test thread.  Every test runs once on each transport of the page
(``?transport=ws``: the WebSocket; ``?transport=sse``: Chromium's own EventSource and
commands POSTed over HTTP).  A dropped connection is a real one: the page talks to the
server through a TCP proxy (:class:`Proxy`) that the test cuts.  Without Chromium the
tests skip — except in CI (``CI=true``), where ``conftest.py`` turns a skip into a
failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest

pytestmark = pytest.mark.timeout(90)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT_ENV = "TRIO_AGENT_SCREENSHOT"
"""Where the interrupt test saves its screenshot, to refresh the README's
(``TRIO_AGENT_SCREENSHOT=docs/screenshot.png``); by default a temporary file, so that a
test run changes nothing in the tree."""

LONG = [f"w{i} " for i in range(80)]
SCRIPT = {
    "turns": [
        {
            "tokens": ["Let", " me", " rest", " a", " moment", " first."],
            "delay": 0.04,
            "tool_calls": [{"id": "nap1", "name": "sleep", "arguments": {"seconds": 60}}],
        },
        {"tokens": ["Rested", " and", " resumed:", " all", " done."], "delay": 0.04},
        {"tokens": LONG, "delay": 0.03},
        {"tokens": LONG, "delay": 0.03},
    ]
}
TIMEOUT_MS = 15_000

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``trio-agent serve`` on a free port; its base URL.  Stopped with SIGTERM, which
    must end it cleanly and promptly."""
    with serving_cli(tmp_path_factory, "browser", SCRIPT, capture_stderr=True) as url:
        yield url


SERVE: Final = (sys.executable, "-m", "trio_agent.cli", "serve", "--port", "0")


@contextmanager
def serving_cli(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    script: dict[str, Any],
    *flags: str,
    capture_stderr: bool = False,
) -> Iterator[str]:
    """``trio-agent serve --port 0 --model scripted:<script> FLAGS…`` in a child
    process; its base URL.  Stopped with SIGTERM, which must end it cleanly (status 0)
    within 15 s."""
    path = tmp_path_factory.mktemp(name) / "script.json"
    path.write_text(json.dumps(script))
    proc = subprocess.Popen(
        [*SERVE, "--model", f"scripted:{path}", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, f"unexpected first line from serve: {line!r}"
        yield f"http://127.0.0.1:{match.group(1)}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("serve did not exit within 15 s of SIGTERM") from None
        assert status == 0, proc.stderr.read() if proc.stderr else ""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 820}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


class Proxy:
    """A TCP proxy on a free loopback port in front of ``upstream`` (a port), one
    thread per direction per connection.  It records the request head each connection
    starts with, and :meth:`cut` closes the live connections whose head matches: the
    network dropping, as the page and the server see it."""

    HEAD_MAX: Final = 16384
    """Bytes of a connection's first data kept as its request head."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.lock = threading.Lock()
        self.live: list[tuple[bytes, socket.socket, socket.socket]] = []
        self.heads: list[bytes] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            head = client.recv(self.HEAD_MAX)
            server.sendall(head)
            with self.lock:
                self.heads.append(head)
                self.live.append((head, client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self, pattern: bytes) -> int:
        """Cut the live connections whose head matches ``pattern``; how many."""
        with self.lock:
            cut = [c for c in self.live if re.search(pattern, c[0])]
            self.live = [c for c in self.live if c not in cut]
        for _, client, server in cut:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        return len(cut)

    def close(self) -> None:
        self.listener.close()
        self.cut(rb"")


@pytest.fixture(scope="module")
def proxy(server: str) -> Iterator[Proxy]:
    """A :class:`Proxy` in front of the server (``proxy.url`` is the page's base URL)."""
    match = re.search(r":(\d+)/", server)
    assert match
    p = Proxy(int(match.group(1)))
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(params=["ws", "sse"])
def transport(request: pytest.FixtureRequest) -> str:
    """The page's transport (``?transport=``)."""
    value: str = request.param
    return value


def open_session(page: Any, server: str, session: str, transport: str) -> None:
    page.goto(f"{server}?session={session}-{transport}&transport={transport}")
    expect(page.locator("#conn")).to_have_attribute("data-conn", "live")
    expect(page.locator("#status")).to_have_attribute("data-status", "idle")
    assert page.evaluate("window.trioAgent.transport") == transport


def send(page: Any, text: str) -> None:
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def last_answer(page: Any) -> str:
    text: str = page.locator(".msg.assistant .text").last.inner_text()
    return text


def test_stream_hard_interrupt_during_the_slow_tool_then_resume(
    page: Any, server: str, transport: str, tmp_path: Path
) -> None:
    open_session(page, server, "b-interrupt", transport)
    send(page, "Take a nap, then answer.")
    expect(page.locator(".msg.user").first).to_have_text("Take a nap, then answer.")
    # Tokens arrive, then the tool card fills in and runs.
    expect(page.locator(".msg.assistant .text").first).to_have_text("Let me rest a moment first.")
    card = page.locator('.tool-card[data-call-id="nap1"]')
    expect(card).to_have_attribute("data-status", "running")
    expect(card.locator(".tool-name")).to_have_text("sleep")
    assert json.loads(card.locator(".args-text").inner_text()) == {"seconds": 60}
    expect(page.locator("#status")).to_have_attribute("data-status", "acting")
    # Hard interrupt during the slow tool: the card turns cancelled, the badge interrupted.
    page.locator("#btn-hard").click()
    expect(card).to_have_attribute("data-status", "cancelled")
    expect(card.locator(".pill")).to_have_text("cancelled")
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    expect(page.locator("#btn-resume")).to_be_enabled()
    # Resume: the run goes on to the next turn and completes.
    page.locator("#btn-resume").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "done")
    expect(page.locator(".msg.assistant .text").last).to_have_text("Rested and resumed: all done.")
    # The timeline numbers every event; the counters moved.
    seqs = [int(s) for s in page.locator("#timeline .seq").all_inner_texts() if s.isdigit()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert int(page.locator("#count-frames").inner_text()) >= 2
    assert int(page.locator("#count-events").inner_text()) == seqs[-1]
    expect(page.locator("#toast")).to_be_hidden()  # no error for this client
    shot = Path(
        (transport == "ws" and os.environ.get(SCREENSHOT_ENV)) or tmp_path / "screenshot.png"
    )
    page.screenshot(path=str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_reload_mid_stream_completes_the_text_without_duplicates(
    page: Any, server: str, transport: str
) -> None:
    open_session(page, server, "b-reload", transport)
    # Two quick turns first, so that the long turn is the one that plays.
    send(page, "Take a nap, then answer.")
    expect(page.locator('.tool-card[data-call-id="nap1"]')).to_have_attribute(
        "data-status", "running"
    )
    page.locator("#btn-hard").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    page.locator("#btn-resume").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "done")
    send(page, "Now a long answer.")
    expect(page.locator(".msg.assistant .text").last).to_contain_text("w5 ")
    page.reload()
    # The snapshot holds the half-finished text; the live tokens complete it.
    expect(page.locator("#status")).to_have_attribute("data-status", "done")
    expected = "".join(LONG)
    assert last_answer(page) == expected
    assert page.locator(".msg.assistant .text").all_inner_texts().count(expected) == 1


def test_a_connection_cut_mid_run_reconnects_and_loses_nothing(
    page: Any, proxy: Proxy, transport: str
) -> None:
    open_session(page, proxy.url, "b-drop", transport)
    send(page, "Take a nap, then answer.")
    expect(page.locator('.tool-card[data-call-id="nap1"]')).to_have_attribute(
        "data-status", "running"
    )
    page.locator("#btn-hard").click()
    page.locator("#btn-resume").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "done")
    send(page, "Now a long answer.")
    expect(page.locator(".msg.assistant .text").last).to_contain_text("w5 ")
    # The network drops the event connection mid-run (the WebSocket, or the SSE stream).
    stream = rb"GET /sessions/b-drop-sse/events" if transport == "sse" else rb"Upgrade: websocket"
    before = page.evaluate("window.trioAgent.lastSeq")
    heads = len(proxy.heads)
    assert proxy.cut(stream) == 1
    expect(page.locator("#conn")).to_have_attribute("data-conn", "reconnecting")
    expect(page.locator("#conn")).to_have_attribute("data-conn", "live")
    expect(page.locator("#status")).to_have_attribute("data-status", "done")
    assert last_answer(page) == "".join(LONG)  # the text exact: nothing lost, nothing twice
    assert page.locator(".msg.assistant .text").all_inner_texts().count("".join(LONG)) == 1
    assert page.evaluate("window.trioAgent.lastSeq") > before
    # It came back where it left off: the EventSource by itself, with Last-Event-ID; the
    # WebSocket with ?after=.  One snapshot only (the first connect).
    (back,) = [h for h in proxy.heads[heads:] if re.search(stream, h)]
    if transport == "sse":
        found = re.search(rb"(?i)\r\nlast-event-id: (\d+)\r\n", back)
        assert found, back
        assert int(found.group(1)) >= before
    else:
        found = re.search(rb"[?&]after=(\d+)", back)
        assert found, back
        assert int(found.group(1)) >= before
    types = page.locator("#timeline .type").all_inner_texts()
    assert types.count("state") == 1


APPROVAL_SCRIPT = {
    "turns": [
        {
            "tokens": ["Two", " naps."],
            "tool_calls": [
                {"id": "a1", "name": "sleep", "arguments": {"seconds": 0.1}},
                {"id": "a2", "name": "sleep", "arguments": {"seconds": 0.1}},
            ],
        },
        {"tokens": ["Done", " napping."]},
    ]
}


@pytest.fixture(scope="module")
def approval_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``trio-agent serve --approve sleep``: every nap waits for the page's decision."""
    with serving_cli(tmp_path_factory, "approval", APPROVAL_SCRIPT, "--approve", "sleep") as url:
        yield url


def test_approve_one_call_and_deny_another_across_a_reload_and_a_blip(
    page: Any, approval_server: str, transport: str
) -> None:
    open_session(page, approval_server, "b-approve", transport)
    send(page, "Take two naps.")
    first = page.locator('.tool-card[data-call-id="a1"]')
    second = page.locator('.tool-card[data-call-id="a2"]')
    for card in (first, second):
        expect(card).to_have_attribute("data-status", "awaiting_approval")
        expect(card.locator(".approval .approve")).to_be_visible()
    # A reload keeps both questions: the snapshot lists the calls waiting for approval.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-conn", "live")
    for card in (first, second):
        expect(card).to_have_attribute("data-status", "awaiting_approval")
    # A click during a network blip is sent once the connection is back, and applied once.
    page.evaluate("window.trioAgent.drop()")
    expect(page.locator("#conn")).to_have_attribute("data-conn", "reconnecting")
    first.locator(".approve").click()
    expect(page.locator("#conn")).to_have_attribute("data-conn", "live")
    expect(first).to_have_attribute("data-status", "ok")
    # Deny the other with a reason: the model reads it, the run goes on.
    second.locator(".reason").fill("not now")
    second.locator(".deny").click()
    expect(second).to_have_attribute("data-status", "denied")
    expect(second.locator(".result-text")).to_have_text("denied: not now")
    expect(page.locator("#status")).to_have_attribute("data-status", "done")
    expect(page.locator(".msg.assistant .text").last).to_have_text("Done napping.")
    assert page.evaluate("window.trioAgent.unacked") == 0
    decisions = [
        t for t in page.locator("#timeline .type").all_inner_texts() if t == "tool_approval"
    ]
    assert len(decisions) == 2  # the resent approve was not applied twice


MCP_SCRIPT = {
    "turns": [
        {
            "tokens": ["Asking", " the", " server."],
            "tool_calls": [
                {"id": "m1", "name": "wait", "arguments": {"seconds": 60, "label": "page"}}
            ],
        },
        {"tokens": ["Stopped", " waiting."]},
    ]
}


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``trio-agent serve --mcp 'python tests/mcp_server.py'``: an MCP server's tools."""
    mcp = f"{sys.executable} tests/mcp_server.py"
    with serving_cli(tmp_path_factory, "mcp", MCP_SCRIPT, "--mcp", mcp) as url:
        yield url


def test_an_mcp_calls_progress_is_a_bar_on_its_card_across_a_reload(
    page: Any, mcp_server: str, transport: str, tmp_path: Path
) -> None:
    open_session(page, mcp_server, "b-mcp", transport)
    send(page, "Ask the server.")
    card = page.locator('.tool-card[data-call-id="m1"]')
    expect(card).to_have_attribute("data-status", "running")
    # The server's first progress notification ("started", 0 of 4): the bar shows it.
    expect(card.locator(".progress .progress-text")).to_have_text("0 / 4 — started")
    bar = card.locator(".progress progress")
    assert (bar.get_attribute("max"), bar.evaluate("b => b.value")) == ("4", 0)
    page.screenshot(path=str(tmp_path / "progress.png"))
    # A reload keeps it: the snapshot holds each running call's newest progress.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-conn", "live")
    expect(card.locator(".progress .progress-text")).to_have_text("0 / 4 — started")
    page.locator("#btn-hard").click()
    expect(card).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    types = page.locator("#timeline .type").all_inner_texts()
    assert "state" in types
