"""The server's plain-HTTP endpoints as a table: which handler answers which method and
path (sans-I/O: matching only).

A :class:`Route` is a method set, a path pattern (matched in full against the request
path, undecoded) and a handler; ``cors`` marks an endpoint that pages of the allowed
origins may call from elsewhere (the answers carry CORS headers, and ``OPTIONS``
preflights are answered).  :class:`Routes` finds the first route whose path matches:
a method it does not take is 405 with ``Allow``, a path no route takes is 404.  The
server (:mod:`.server`) builds its table in one place and answers the WebSocket
upgrade before it; a new endpoint is one line there.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import attrs

from .http import HTTPConnection, Refused, Request

if TYPE_CHECKING:
    from .server import AgentServer

__all__ = ["Handler", "Route", "Routes"]

Handler: TypeAlias = Callable[
    ["AgentServer", HTTPConnection, Request, "re.Match[str]"], Awaitable[None]
]
"""``await handler(server, http, request, match)``: answer the request (``match`` is the
path's match, its groups the path parameters)."""


@attrs.frozen
class Route:
    """``methods`` (upper case) of the paths ``path`` matches in full, answered by
    ``handler``; ``cors``: callable from the allowed origins' pages (preflights
    answered)."""

    methods: tuple[str, ...]
    path: re.Pattern[str]
    handler: Handler
    cors: bool = False

    def allow(self) -> str:
        """The ``Allow`` header's value: the methods, and ``OPTIONS`` for a CORS route."""
        return ", ".join((*self.methods, "OPTIONS") if self.cors else self.methods)


class Routes:
    """A table of routes, tried in order."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, path: str) -> tuple[Route, re.Match[str]]:
        """The first route whose pattern matches ``path``, or :class:`Refused` (404)."""
        for route in self.routes:
            found = route.path.fullmatch(path)
            if found is not None:
                return route, found
        raise Refused(404, f"not found: {path}")

    def find(self, method: str, path: str) -> tuple[Route, re.Match[str]]:
        """The route that answers ``method`` on ``path``, or :class:`Refused`: 404 (no
        route's path), 405 with ``Allow`` (the path's route takes other methods).  An
        ``OPTIONS`` of a CORS route is found (it is a preflight)."""
        route, found = self.match(path)
        if method in route.methods or (method == "OPTIONS" and route.cors):
            return route, found
        raise Refused(405, f"method {method} not allowed", [("allow", route.allow())])
