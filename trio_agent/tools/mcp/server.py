"""``McpServer``: which MCP server to connect to, and how (no MCP SDK needed here).

A server is a command to run (stdio: the runtime starts it as a subprocess and speaks
to its stdin and stdout) or a URL (streamable HTTP).  ``McpServer.parse`` reads the
command line's ``--mcp SERVER``: a URL when it starts with ``http://`` or ``https://``,
else a command line split as a shell would (``--mcp 'python server.py --flag'``).
The defaults and their reasons are here, so that ``--help`` needs no SDK either.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Final, Literal
from urllib.parse import urlsplit

import attrs

from ..approval import Approval, check_approval

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_RESTARTS",
    "RESTART_BACKOFF",
    "RESTART_BACKOFF_MAX",
    "McpServer",
    "tool_name",
]

CONNECT_TIMEOUT: Final = 30.0
"""Seconds to connect to a server and list its tools (start a subprocess and shake
hands, or reach a URL).  A server that needs longer (one that downloads itself with
``npx`` on first use) sets its own; one that takes longer than this on every start is
better found out than waited for."""

MAX_RESTARTS: Final = 3
"""Attempts to start a server again when a call finds it gone, before that call ends
``error``: enough to ride out a crash or a server being redeployed, few enough that a
server that cannot start fails the call within seconds (the next call tries again)."""

RESTART_BACKOFF: Final = 0.5
"""Seconds before the second attempt to start a server again; it doubles for each
attempt after (0.5, 1, 2 …), so a server that crashes at once is not spun."""

RESTART_BACKOFF_MAX: Final = 8.0
"""The longest wait between two attempts to start a server again."""

_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]+")


def tool_name(text: str) -> str:
    """``text`` as a name a model's tool may have (letters, digits, ``_``, ``-``; at most
    64 characters): other characters become ``_``."""
    name = _NAME_CHARS.sub("_", text).strip("_") or "mcp"
    return name[:64]


def _argv(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(
            f"MCP server command must be a list of arguments, got the string {value!r} "
            "(McpServer.parse splits a command line)"
        )
    return tuple(value)


@attrs.frozen(slots=True, kw_only=True)
class McpServer:
    """An MCP server whose tools a runtime offers (``open_runtime(mcp=[...])``).

    Exactly one of ``command`` (argv of a server spoken to over stdio; it inherits this
    process's stderr, and ``env`` is added to a minimal environment as the SDK does)
    or ``url`` (streamable HTTP; ``headers`` go with every request, e.g. an
    ``Authorization``).  ``name`` prefixes its tools' names where they clash with
    another's (default: the name the server gives, else ``mcp``).  ``timeout``: the
    seconds one call may take (default: the runtime's ``tool_timeout``).
    ``approval``: every call of its tools waits for a person's approval (``True``, or a
    predicate on the arguments; ``open_runtime(approval={name: ...})`` decides per
    tool).  ``protocol``: ``auto`` (the newest revision the server speaks) or
    ``legacy`` (the ``initialize`` handshake of the 2025 revisions only).
    ``connect_timeout`` and ``max_restarts``: see :data:`CONNECT_TIMEOUT` and
    :data:`MAX_RESTARTS`.
    """

    command: tuple[str, ...] | None = attrs.field(default=None, converter=_argv)
    url: str | None = None
    name: str | None = None
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    headers: Mapping[str, str] | None = None
    timeout: float | None = None
    approval: Approval = attrs.field(default=False, validator=check_approval)
    protocol: Literal["auto", "legacy"] = "auto"
    connect_timeout: float = CONNECT_TIMEOUT
    max_restarts: int = MAX_RESTARTS

    def __attrs_post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server is a command or a URL: give exactly one of the two")
        if self.command is not None:
            if not self.command or not all(isinstance(a, str) and a for a in self.command):
                raise ValueError(
                    f"MCP server command must be a non-empty list of arguments, got "
                    f"{list(self.command)!r}"
                )
            if self.headers is not None:
                raise ValueError("headers are for an MCP server at a URL, not a command")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"MCP server URL must be http:// or https://, got {self.url!r}")
            if self.env is not None or self.cwd is not None:
                raise ValueError("env and cwd are for an MCP server command, not a URL")
        if self.name is not None and tool_name(self.name) != self.name:
            raise ValueError(
                f"MCP server name {self.name!r} is not allowed: use 1 to 64 letters, "
                "digits, '_' or '-'"
            )
        for field in ("timeout", "connect_timeout"):
            value = getattr(self, field)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(
                    f"MCP server {field} must be a positive number of seconds, got {value!r}"
                )
        if self.protocol not in ("auto", "legacy"):
            raise ValueError(
                f"MCP server protocol must be 'auto' or 'legacy', got {self.protocol!r}"
            )
        if not (isinstance(self.max_restarts, int) and self.max_restarts >= 1):
            raise ValueError(f"MCP server max_restarts must be >= 1, got {self.max_restarts!r}")

    @classmethod
    def parse(cls, spec: str) -> McpServer:
        """The server of ``--mcp SPEC``: a URL (``http://…``, ``https://…``) or a command
        line, split as a shell would."""
        text = spec.strip()
        if re.match(r"^https?://", text, re.IGNORECASE):
            return cls(url=text)
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise ValueError(f"can't read the MCP server command {spec!r}: {exc}") from None
        if not argv:
            raise ValueError("an MCP server needs a command or a URL, got nothing")
        return cls(command=argv)

    def describe(self) -> str:
        """The server as a person wrote it: its URL, or its command line."""
        if self.url is not None:
            return self.url
        assert self.command is not None
        return shlex.join(self.command)
