"""A real ``redis-server`` for tests and benchmarks: a free loopback port, a temporary
directory, AOF on (``appendfsync always``: what Redis acknowledged is on disk), stopped
afterwards.

    with RedisServer() as server:      # or: server = RedisServer(); server.start() …
        server.url                     # redis://127.0.0.1:PORT/0
        server.restart()               # stop (SHUTDOWN, AOF flushed) and start again
        server.stop(); server.start()  # the same port and data directory

A missing ``redis-server`` raises :class:`RedisServerMissing`: the test fixture turns
that into a skip outside CI and into a failure with ``CI=true`` (nothing may skip
there).  ``python -m trio_agent.bench._redis_server`` runs one until Ctrl-C (for manual
runs).  It lives in the package because the ``redis`` benchmark, which ships with it,
starts one; ``tests/test_redis.py`` uses it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Final

__all__ = ["RedisServer", "RedisServerMissing", "free_port"]

START_TIMEOUT: Final = 10.0
"""Seconds redis-server has to accept connections (it takes ~10 ms; CI machines stall)."""


class RedisServerMissing(RuntimeError):
    """``redis-server`` is not installed (``apt-get install redis-server``)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; see the module docstring."""

    def __init__(self, *, appendfsync: str = "always") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing(
                "redis-server is not installed: run scripts/install-system-deps.sh "
                "(apt-get install redis-server)"
            )
        self.binary = binary
        self.appendfsync = appendfsync
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="trio-agent-redis-")
        self.dir = self._dir.name
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(self.dir, "redis.log"),
        ]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self._proc.returncode}; "
                    f"see {os.path.join(self.dir, 'redis.log')}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT}s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes the AOF and exits)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":  # pragma: no cover - manual use
    with RedisServer() as server:
        print(server.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
