"""Traces end to end: ``--otel`` exports OTLP over HTTP/protobuf to a real receiver on
127.0.0.1 that decodes what it gets with opentelemetry-proto; a run whose owner is
killed (``kill -9``) and recovered by a second process on the same Redis continues its
trace there; ``--otel`` without the extra says what to install.

Real processes and real time: every wait is on a condition, bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio_websocket
from conftest import IN_CI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from trio_agent.bench._redis_server import RedisServer, RedisServerMissing
from trio_agent.testing import ScriptBuilder
from trio_agent.tracing import run_key, span_id, trace_id

pytestmark = pytest.mark.timeout(90)

TRIO_AGENT = [sys.executable, "-m", "trio_agent.cli"]
LEASE_TTL = 1.2  # (as in test_redis: short, yet renewed in time on a loaded machine)


# ---- a real OTLP/HTTP receiver -------------------------------------------------------------


def _value(kv: KeyValue) -> Any:
    v = kv.value
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class Received:
    """A span as the receiver decoded it, with its resource's attributes."""

    def __init__(self, span: Span, resource: dict[str, Any]) -> None:
        self.span = span
        self.resource = resource
        self.name = span.name
        self.trace_id = int.from_bytes(span.trace_id, "big")
        self.span_id = int.from_bytes(span.span_id, "big")
        self.parent_id = int.from_bytes(span.parent_span_id, "big") if span.parent_span_id else None
        self.attributes = {kv.key: _value(kv) for kv in span.attributes}


class Receiver:
    """``POST /v1/traces`` on 127.0.0.1 (the standard library's HTTP server): decodes each
    ``ExportTraceServiceRequest`` and keeps its spans."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.requests = 0
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/traces"
                assert self.headers["content-type"] == "application/x-protobuf"
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.changed:
                    receiver.requests += 1
                    for rs in request.resource_spans:
                        resource = {kv.key: _value(kv) for kv in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            receiver.spans.extend(Received(s, resource) for s in ss.spans)
                    receiver.changed.notify_all()
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 20
    ) -> None:
        def wait() -> bool:
            with self.changed:
                return self.changed.wait_for(lambda: predicate(self.spans), timeout)

        assert await trio.to_thread.run_sync(wait), (
            f"spans received: {[s.name for s in self.spans]}"
        )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def otel_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",  # (ms: batches go out at once)
        **extra,
    )
    return env


# ---- trio-agent run --otel ----------------------------------------------------------------------


async def test_run_with_otel_exports_its_spans_over_otlp_http(
    receiver: Receiver, tmp_path: Path
) -> None:
    script = tmp_path / "script.json"
    builder = ScriptBuilder().turn(
        ["Let me."],
        tool_calls=[{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}],
    )
    script.write_bytes(orjson.dumps(builder.turn(["42."]).build()))
    with trio.fail_after(60):
        done = await trio.run_process(
            [
                *TRIO_AGENT,
                "run",
                "--otel",
                "--events",
                "jsonl",
                "--model",
                f"scripted:{script}",
                "6*7?",
            ],
            env=otel_env(receiver),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    (began,) = [e for e in events if e["type"] == "run_started"]
    key = run_key("cli", 1, began["ts"])
    # (the exporter flushed before the process exited: everything is here)
    names = sorted(s.name for s in receiver.spans)
    assert names == [
        "chat scripted",
        "chat scripted",
        "execute_tool calculator",
        "invoke_agent trio-agent",
    ]
    assert {s.trace_id for s in receiver.spans} == {trace_id(key)}
    (agent,) = [s for s in receiver.spans if s.name.startswith("invoke_agent")]
    assert agent.span_id == span_id(key, "invoke_agent") and agent.parent_id is None
    assert all(s.parent_id == agent.span_id for s in receiver.spans if s is not agent)
    assert agent.resource["service.name"] == "trio-agent"
    assert agent.attributes["gen_ai.conversation.id"] == "cli"
    (calc,) = [s for s in receiver.spans if s.name == "execute_tool calculator"]
    assert calc.attributes["gen_ai.tool.call.id"] == "c1"
    assert "gen_ai.tool.call.arguments" not in calc.attributes  # (no content unless asked)


def test_otel_without_the_extra_says_which_extra_to_install() -> None:
    hide = (
        "import sys; sys.modules['opentelemetry.sdk'] = None; "
        "from trio_agent.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    for command in (["run", "--otel", "hi"], ["serve", "--otel", "--port", "0"]):
        out = subprocess.run(
            [sys.executable, "-c", hide, *command], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 2, out.stderr
        assert "--otel needs the otel extra (pip install 'trio-agent[otel]')" in out.stderr


# ---- a run recovered by another process --------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except RedisServerMissing as exc:
        if IN_CI:
            pytest.fail(f"CI=true and {exc}")
        pytest.skip(str(exc))
    with server:
        yield server


@asynccontextmanager
async def serve_process(
    redis: RedisServer, prefix: str, script: Path, env: dict[str, str]
) -> AsyncIterator[tuple[trio.Process, int]]:
    command = [
        *TRIO_AGENT, "serve", "--otel", "--port", "0", "--model", f"scripted:{script}",
        "--redis", redis.url, "--redis-prefix", prefix, "--lease-ttl", str(LEASE_TTL),
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:

        async def run(*, task_status: trio.TaskStatus[trio.Process]) -> None:
            await trio.run_process(
                command, check=False, stdout=subprocess.PIPE, env=env, task_status=task_status
            )

        proc: trio.Process = await nursery.start(run)
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1)
                assert chunk, "the serve process exited before listening"
                line += chunk
        port = int(line.decode().rsplit(":", 1)[1].strip().strip("/"))
        try:
            yield proc, port
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)  # (a graceful stop flushes the exporter)
            with trio.move_on_after(15):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
            nursery.cancel_scope.cancel()


async def until(ws: trio_websocket.WebSocketConnection, kind: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] != kind:
        for e in orjson.loads(await ws.get_message()):
            seen.append(e)
            if e["type"] == kind:
                break
    return seen


async def test_a_run_recovered_by_another_process_continues_its_trace(
    receiver: Receiver, redis_server: RedisServer, tmp_path: Path
) -> None:
    script = tmp_path / "script.json"
    builder = (
        ScriptBuilder()
        .turn(
            ["Let me", " wait."],
            tool_calls=[{"id": "n", "name": "sleep", "arguments": {"seconds": 30}}],
        )
        .turn(["recovered."])  # played by the process that took the run over
    )
    script.write_bytes(orjson.dumps(builder.build()))
    prefix = f"t{uuid.uuid4().hex[:10]}"
    env_a = otel_env(receiver, OTEL_RESOURCE_ATTRIBUTES="service.instance.id=a")
    env_b = otel_env(receiver, OTEL_RESOURCE_ATTRIBUTES="service.instance.id=b")

    def from_(instance: str) -> list[Received]:
        return [s for s in receiver.spans if s.resource.get("service.instance.id") == instance]

    with trio.fail_after(80):
        async with (
            serve_process(redis_server, prefix, script, env_a) as (proc_a, port_a),
            serve_process(redis_server, prefix, script, env_b) as (_, port_b),
        ):
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{port_a}/sessions/s"
            ) as ws:
                await ws.send_message(orjson.dumps({"op": "user_input", "text": "go"}).decode())
                seen = await until(ws, "model_finished")  # the tool call is in flight
            (began,) = [e for e in seen if e["type"] == "run_started"]
            key = run_key("s", 1, began["ts"])
            # A emitted the model call that ended; then A dies mid-call.
            await receiver.wait_for(lambda _: any(s.name == "chat scripted" for s in from_("a")))
            proc_a.kill()
            await proc_a.wait()
            after = seen[-1]["seq"]
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{port_b}/sessions/s?after={after}"
            ) as ws:
                recovered = await until(ws, "interrupted")
                assert "recovered by" in recovered[-1]["reason"]
                await ws.send_message(orjson.dumps({"op": "resume"}).decode())
                await until(ws, "done")
            await receiver.wait_for(
                lambda _: any(s.name.startswith("invoke_agent") for s in from_("b"))
            )
    a, b = from_("a"), from_("b")
    assert [s.name for s in a] == ["chat scripted"]  # (A died before the rest ended)
    assert sorted(s.name for s in b) == [
        "chat scripted",
        "execute_tool sleep",
        "invoke_agent trio-agent",
    ]
    # One trace: B's spans carry on A's, under the run's span that B emitted.
    assert {s.trace_id for s in a + b} == {trace_id(key)}
    (agent,) = [s for s in b if s.name.startswith("invoke_agent")]
    assert agent.span_id == span_id(key, "invoke_agent")
    assert all(s.parent_id == agent.span_id for s in a + b if s is not agent)
    assert [s.attributes["trio_agent.step"] for s in a + b if s.name == "chat scripted"] == [1, 2]
    (tool,) = [s for s in b if s.name == "execute_tool sleep"]
    assert tool.span_id == span_id(key, "execute_tool", 1, "n")
    assert tool.attributes["error.type"] == "cancelled"
    # The tool span began when A started the call, and ended when B closed it.
    assert (
        tool.span.start_time_unix_nano < a[0].span.end_time_unix_nano < tool.span.end_time_unix_nano
    )
    assert [e.name for e in agent.span.events] == ["interrupt", "interrupted", "resume"]
