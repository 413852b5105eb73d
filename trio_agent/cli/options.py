"""What ``run`` and ``serve`` share: the options that shape the agent (DESIGN §7).

- ``--model SPEC``, ``--base-url URL`` and ``--max-tokens N``: the model
  (:func:`add_model_arguments`, :func:`model_of`); ``demo`` takes them too;
- ``--approve NAME,…``: calls of these tools wait for a person's approval (DESIGN §9);
  on ``serve`` the page asks, on ``run`` the terminal does (:func:`add_agent_arguments`,
  :func:`approval_of`);
- ``--otel``: runs are traced to OpenTelemetry over OTLP/HTTP, configured by the
  standard ``OTEL_*`` environment variables (:func:`tracer_provider_of`; the ``otel``
  extra);
- ``--mcp SERVER`` (repeatable): the tools of an MCP server too, a command line
  (stdio) or an ``http(s)://`` URL (streamable HTTP) (DESIGN §11; :func:`mcp_of`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

from ..tools import Approval, McpServer, Tool
from ..tools.mcp import INSTALL_HINT as MCP_INSTALL_HINT

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..models import Model

__all__ = [
    "DEFAULT_MODEL_SPEC",
    "OTEL_EXTRA",
    "UsageError",
    "add_agent_arguments",
    "add_model_arguments",
    "approval_of",
    "enter_runtime",
    "mcp_of",
    "model_of",
    "tracer_provider_of",
]

OTEL_EXTRA: Final = "pip install 'trio-agent[otel]'"
"""What ``--otel`` needs installed."""

DEFAULT_MODEL_SPEC: Final = "scripted"


class UsageError(Exception):
    """A command-line option that makes no sense; the message says which (exit 2)."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model SPEC``, ``--base-url URL`` and ``--max-tokens N``, for ``run``, ``serve``
    and ``demo``."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_SPEC,
        metavar="SPEC",
        help="scripted, scripted:FILE, openai:MODEL or anthropic:MODEL (default: scripted)",
    )
    parser.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="provider base URL (OpenAI-compatible: with /v1; Anthropic: the host root); "
        "default from OPENAI_BASE_URL / ANTHROPIC_BASE_URL",
    )
    parser.add_argument(
        "--max-tokens",
        type=_positive,
        default=None,
        metavar="N",
        help="cap each answer of a provider's model at N tokens (default: the server's)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def model_of(args: argparse.Namespace) -> Model:
    """The model ``--model``, ``--base-url`` and ``--max-tokens`` name; ``ValueError``
    (or ``OSError`` for a script file) saying what is wrong."""
    from ..models import from_spec

    return from_spec(
        args.model,
        base_url=getattr(args, "base_url", None),
        max_tokens=getattr(args, "max_tokens", None),
    )


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """``--approve NAME,…``, ``--otel`` and ``--mcp SERVER``, for ``run`` and ``serve``."""
    parser.add_argument(
        "--approve",
        default="",
        metavar="NAME,…",
        help="comma-separated tools whose every call waits for a person's approval "
        "(serve: on the page; run: asked on the terminal, denied when stdin is not one)",
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="trace every run to OpenTelemetry (GenAI spans, OTLP over HTTP/protobuf) as "
        "the OTEL_EXPORTER_OTLP_* and other OTEL_* environment variables say; needs the "
        "otel extra",
    )
    parser.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="SERVER",
        help="offer the tools of an MCP server too: a command line, run over stdio "
        "(--mcp 'python server.py'), or an http(s):// URL (streamable HTTP); repeatable",
    )


def mcp_of(args: argparse.Namespace) -> list[McpServer]:
    """``open_runtime(mcp=…)`` from ``--mcp``; :class:`UsageError` for one that is
    neither a URL nor a command line."""
    servers = []
    for spec in getattr(args, "mcp", None) or []:
        try:
            servers.append(McpServer.parse(spec))
        except ValueError as exc:
            raise UsageError(f"--mcp {spec!r}: {exc}") from None
    if servers and importlib.util.find_spec("mcp") is None:
        raise UsageError(f"--mcp needs the MCP SDK, which is not installed: {MCP_INSTALL_HINT}")
    return servers


def approval_of(args: argparse.Namespace, tools: Sequence[Tool]) -> dict[str, Approval]:
    """``open_runtime(approval=…)`` from ``--approve``; :class:`UsageError` for a name
    that is not one of ``tools`` — unless MCP servers are given (``--mcp``): their
    tools are known once they are connected, and the runtime refuses a name that is
    none of them (``ValueError``, naming every tool)."""
    names = [n.strip() for n in str(getattr(args, "approve", "") or "").split(",") if n.strip()]
    known = {t.name for t in tools}
    unknown = [n for n in names if n not in known]
    if unknown and not getattr(args, "mcp", None):
        raise UsageError(
            f"--approve names tool(s) {', '.join(unknown)} that are not offered; "
            f"tools: {', '.join(sorted(known)) or 'none'}"
        )
    return {name: True for name in names}


@asynccontextmanager
async def tracer_provider_of(args: argparse.Namespace) -> AsyncIterator[Any]:
    """``open_runtime(tracer_provider=…)`` from ``--otel`` (None without it), flushed and
    shut down on the way out; :class:`UsageError` naming the extra when it is missing."""
    if not getattr(args, "otel", False):
        yield None
        return
    try:
        from ..tracing.otlp import otlp_provider, shutdown
    except ImportError as exc:
        raise UsageError(
            f"--otel needs the otel extra ({OTEL_EXTRA}): {exc.name or exc} is not installed"
        ) from None
    provider = otlp_provider()
    try:
        yield provider
    finally:
        await shutdown(provider)


async def enter_runtime(stack: AsyncExitStack, command: str, **options: Any) -> Runtime | int:
    """``open_runtime(**options)`` entered on ``stack``; or, when it cannot be opened, the
    exit status, having said why on stderr: 1 for an MCP server that cannot be started
    (``McpServerError``), 2 for an ``--approve`` naming a tool no server has
    (``ValueError``)."""
    from .._runtime import open_runtime
    from ..errors import McpServerError

    try:
        return await stack.enter_async_context(open_runtime(**options))
    except McpServerError as exc:
        print(f"trio-agent {command}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # --approve naming a tool no server has
        print(f"trio-agent {command}: {exc}", file=sys.stderr)
        return 2
