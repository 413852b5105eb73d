"""``trio-agent serve``: the WebSocket, Server-Sent Events, HTTP command and AG-UI
endpoints and the browser page, on one port, until SIGINT/SIGTERM.

- :func:`add_serve_arguments` — its options: where to listen, the token, the origins,
  the Redis options (:func:`add_redis_arguments`) and a flag for every
  :class:`~trio_agent.transports.ServerLimits` field (:func:`add_limit_arguments`, read
  back by :func:`limits_from_args`);
- :func:`serve_command` — the server, and its graceful stop (:func:`cancel_runs`, then
  the clients drained), each step bounded by ``SHUTDOWN_GRACE``;
- :func:`open_log_from_args` — the session log ``--redis`` asks for.  The defaults of the
  Redis options come from :mod:`trio_agent.redis.defaults`, which needs no Redis
  client: coredis is imported only when ``--redis`` is given.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import os
import re
import signal
import sys
import textwrap
import typing
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .._runtime import Runtime, Session
from ..errors import SessionStateError
from ..redis.defaults import DEFAULT_LEASE_TTL, DEFAULT_PREFIX
from ..transports import DEFAULT_PORT, AgentServer, ServerLimits, is_loopback
from .options import (
    UsageError,
    approval_of,
    enter_runtime,
    mcp_of,
    model_of,
    tracer_provider_of,
)

if TYPE_CHECKING:
    from ..redis import RedisLog

__all__ = [
    "SHUTDOWN_GRACE",
    "add_limit_arguments",
    "add_redis_arguments",
    "add_serve_arguments",
    "cancel_runs",
    "limits_from_args",
    "open_log_from_args",
    "serve_command",
]

SHUTDOWN_GRACE: Final = 5.0
"""Seconds ``serve`` gives running sessions to end ``cancelled`` on SIGINT/SIGTERM
before the clients are closed (1001) and the runtime is left."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-agent serve`` besides ``--model`` and ``--base-url``."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; anything beyond loopback needs --token)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default: {DEFAULT_PORT}; 0: any free)",
    )
    parser.add_argument(
        "--token",
        default=None,
        metavar="T",
        help="bearer token every client must present (?token= or Authorization); "
        "default: $TRIO_AGENT_TOKEN",
    )
    parser.add_argument(
        "--allow-origin",
        dest="allow_origins",
        action="append",
        default=[],
        metavar="O",
        help="a browser origin (scheme://host[:port]) allowed besides the server's own page; "
        "repeatable",
    )
    add_redis_arguments(parser)
    add_limit_arguments(parser)


# ---- the Redis options --------------------------------------------------------------


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """``--redis URL`` and its companions, for ``trio-agent serve``."""
    parser.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="keep session logs and commands on Redis Streams (redis://HOST:PORT/DB), so "
        "that several processes serve the same sessions; default: in memory",
    )
    parser.add_argument(
        "--redis-prefix",
        default=DEFAULT_PREFIX,
        metavar="P",
        help=f"key prefix on Redis (default: {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=DEFAULT_LEASE_TTL,
        metavar="SECONDS",
        help="seconds before another process recovers the sessions of a process that died "
        f"(default: {DEFAULT_LEASE_TTL:g})",
    )


@asynccontextmanager
async def open_log_from_args(args: argparse.Namespace) -> AsyncIterator[RedisLog | None]:
    """The session log ``--redis`` asks for, or None (in memory)."""
    url = getattr(args, "redis", None)
    if not url:
        yield None
        return
    from ..redis import open_redis_log

    async with open_redis_log(
        url,
        prefix=getattr(args, "redis_prefix", DEFAULT_PREFIX),
        lease_ttl=getattr(args, "lease_ttl", DEFAULT_LEASE_TTL),
    ) as log:
        yield log


# ---- a flag for every limit ---------------------------------------------------------


@functools.cache
def _limit_docs() -> dict[str, str]:
    """The docstring under each ``ServerLimits`` field, read from the source as
    documentation tools read it (one text, in one place); empty if the source is not
    installed."""
    try:
        source = textwrap.dedent(inspect.getsource(ServerLimits))
    except (OSError, TypeError):  # pragma: no cover - an install without sources
        return {}
    (cls,) = ast.parse(source).body
    assert isinstance(cls, ast.ClassDef)
    docs: dict[str, str] = {}
    for stmt, following in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(following.value.value.split())
    return docs


def _limit_help(name: str, default: float) -> str:
    """A flag's help: the first sentence of the field's docstring (in the style of the
    other options: lower case, no full stop), and the default."""
    doc = _limit_docs().get(name, f"ServerLimits.{name}")
    first = re.split(r"(?<=\.) (?=[A-Z(])", doc, maxsplit=1)[0].replace("``", "").rstrip(".")
    word = first.split(" ", 1)[0]
    if word[1:].islower():  # (not "WebSocket")
        first = word.lower() + first[len(word) :]
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{first} (default: {shown})".replace("%", "%%")


def _limit_type(name: str, kind: type[int] | type[float]) -> Callable[[str], float]:
    """The argparse ``type`` of the flag of limit ``name``: the number, checked by
    ``ServerLimits``' own validators, so that argparse names the flag and exits 2."""
    expected = "an integer" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            changes: dict[str, Any] = {name: value}
            attrs.evolve(ServerLimits(), **changes)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag for every ``ServerLimits`` field (``max_connections``:
    ``--max-connections N``), made from the fields themselves: a new limit gets its
    flag, with its docstring's first sentence and its default as the help."""
    group = parser.add_argument_group(
        "limits",
        "what the server lets its clients do; a client that hits one is told its name "
        "(docs/protocol.md)",
    )
    defaults = ServerLimits()
    hints = typing.get_type_hints(ServerLimits)
    for field in attrs.fields(ServerLimits):
        kind = hints[field.name]
        if kind is not int and kind is not float:
            raise TypeError(f"ServerLimits.{field.name}: no command-line flag for {kind!r}")
        default = getattr(defaults, field.name)
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_limit_type(field.name, kind),
            default=default,
            metavar="SECONDS" if field.name.endswith("_timeout") else "N",
            help=_limit_help(field.name, default),
        )


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The ``ServerLimits`` that the flags of :func:`add_limit_arguments` ask for (the
    default for a field ``args`` lacks)."""
    given: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in attrs.fields(ServerLimits) if hasattr(args, f.name)
    }
    return attrs.evolve(ServerLimits(), **given)


# ---- serving ------------------------------------------------------------------------


def serve_command(args: argparse.Namespace) -> int:
    """``trio-agent serve``: run until SIGINT/SIGTERM.  Returns the exit status."""
    from ..tools import DEMO_TOOLS

    token = args.token if args.token is not None else os.environ.get("TRIO_AGENT_TOKEN") or None
    if not is_loopback(args.host) and not token:
        print(
            f"trio-agent serve: refusing to listen on {args.host!r} without a token: anyone "
            "who can reach it could drive the agent.  Pass --token (or set "
            "$TRIO_AGENT_TOKEN), or listen on 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    try:
        approval = approval_of(args, DEMO_TOOLS)
        servers = mcp_of(args)
        model = model_of(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"trio-agent serve: {exc}", file=sys.stderr)
        return 2
    limits = limits_from_args(args)

    async def main() -> int:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with AsyncExitStack() as stack:
                tracer_provider = await stack.enter_async_context(
                    tracer_provider_of(args)  # --otel
                )
                log = await stack.enter_async_context(open_log_from_args(args))  # --redis
                runtime = await enter_runtime(
                    stack,
                    "serve",
                    model=model,
                    tools=DEMO_TOOLS,
                    log=log,
                    # The runtime's own cap is --max-sessions too: its default (10,000)
                    # would refuse sessions that a larger --max-sessions allows.
                    max_sessions=limits.max_sessions,
                    approval=approval,
                    mcp=servers,
                    tracer_provider=tracer_provider,
                )
                if isinstance(runtime, int):
                    return runtime  # (what went wrong is said)
                nursery = await stack.enter_async_context(trio.open_nursery())
                server = AgentServer(
                    runtime, token=token, allow_origins=args.allow_origins, limits=limits
                )
                try:
                    port = await nursery.start(server.serve, args.host, args.port)
                except OSError as exc:
                    print(
                        f"trio-agent serve: can't listen on {args.host}:{args.port}: {exc}",
                        file=sys.stderr,
                    )
                    return 2
                shown = f"[{args.host}]" if ":" in args.host else args.host
                hint = "  (add ?token=… to the page URL)" if token else ""
                print(f"trio-agent serve: http://{shown}:{port}/{hint}", flush=True)
                async for signum in signals:
                    print(
                        f"trio-agent serve: {signal.Signals(signum).name}, shutting down",
                        file=sys.stderr,
                        flush=True,
                    )
                    break
                await cancel_runs(runtime, SHUTDOWN_GRACE)
                await server.drain(SHUTDOWN_GRACE)  # clients get what is left, then 1001
                nursery.cancel_scope.cancel()
        return 0

    try:
        return trio.run(main)
    except UsageError as exc:  # (--otel without the extra)
        print(f"trio-agent serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130


async def cancel_runs(runtime: Runtime, grace: float) -> None:
    """Cancel every run still going (through its step's cancel scope), so that clients
    see ``done`` ``cancelled`` before they are closed; bounded by ``grace``."""

    async def cancel(session: Session) -> None:
        try:
            await session.cancel()
        except (SessionStateError, trio.ClosedResourceError):
            pass  # it ended meanwhile

    with trio.move_on_after(grace):
        async with trio.open_nursery() as nursery:
            for session in list(runtime.sessions.values()):
                state = session.state
                if session.is_replica:
                    continue  # a replica: the run belongs to the process that owns it
                if state.running or state.status == "interrupted":
                    nursery.start_soon(cancel, session)
