"""``open_runtime`` and the ``Runtime``: sessions sharing a model, tools and a nursery.

Ownership: :func:`open_runtime` owns a nursery; each session is one task in it (its
backend's ``run``: in memory, the agent loop), in its own cancel scope, and each step
of a run opens a nursery of its own for the tool calls.  The MCP servers
(``open_runtime(mcp=[...])``) are one task in it too (:class:`~trio_agent.tools.mcp.McpTools`),
which owns each server's connection and its calls' requests.  Leaving the runtime ends
every run through the same cleanup path as a cancel, closes every server connection
(its subprocess ends), then joins every task: none outlives it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from .._bus import DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_EVENTS
from .._core.model import Model
from ..errors import SessionClosed, SessionLimitError
from ..tools import Approval, ApprovalPolicy, McpServer, Tool, ToolRegistry
from .backend import InMemory, SessionLog
from .counters import RuntimeCounters, RuntimeStatistics
from .session import Session, validate_session_id

if TYPE_CHECKING:
    from ..tools.mcp import McpTools

__all__ = [
    "DEFAULT_APPROVAL_TIMEOUT",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_TOOL_CONCURRENCY",
    "DEFAULT_TOOL_TIMEOUT",
    "MODEL_CLOSE_TIMEOUT",
    "Runtime",
    "SessionObserver",
    "open_runtime",
]

DEFAULT_MAX_STEPS: Final = 25
"""Steps one run may take before it ends ``failed``: a model that keeps calling tools
is a runaway, and each step costs a model call."""

DEFAULT_TOOL_CONCURRENCY: Final = 8
"""Tool calls running at once per runtime (a ``CapacityLimiter``): models ask for a few
parallel calls per step; this bounds threads and sockets when many sessions do."""

DEFAULT_TOOL_TIMEOUT: Final = 60.0
"""Seconds a tool call may run before it ends with status ``timeout`` (a tool can set
its own)."""

DEFAULT_MAX_SESSIONS: Final = 10_000
"""Sessions one runtime holds.  An idle session is a parked task and a small log;
10,000 of them is well under a gigabyte."""

DEFAULT_APPROVAL_TIMEOUT: Final = None
"""Seconds a tool call waits for a person's approval before it is denied ("approval
timed out"): by default none — a person may be away, and a waiting call costs nothing
(a paused task and an entry in the state, durable on Redis).  Set one where a run must
not wait for long (``open_runtime(approval_timeout=...)``)."""

logger = logging.getLogger("trio_agent")

SessionObserver = Callable[[Session], Awaitable[None]]
"""A task the runtime runs beside each session it opens (``open_runtime(observers=...)``,
the tracer of ``tracer_provider=``): started in the runtime's nursery once the session
shows its log, it reads the session as any subscriber does and returns when its
subscription ends (the session closed).  An exception from it is logged and ends that
observer alone."""

MODEL_CLOSE_TIMEOUT: Final = 5.0
"""Seconds the model's ``aclose()`` (its connection pool) may take when the runtime
is left, shielded."""


class Runtime:
    """Sessions sharing one model, one tool registry and one tool limiter.  Made by
    :func:`open_runtime`, which owns the nursery every session task runs in."""

    def __init__(
        self,
        nursery: trio.Nursery,
        model: Model,
        tools: Iterable[Tool],
        *,
        max_steps: int = DEFAULT_MAX_STEPS,
        tool_concurrency: int = DEFAULT_TOOL_CONCURRENCY,
        tool_timeout: float = DEFAULT_TOOL_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        log_max_events: int = DEFAULT_LOG_MAX_EVENTS,
        log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        log: SessionLog | None = None,
        approval: Mapping[str, Approval] | None = None,
        approval_timeout: float | None = DEFAULT_APPROVAL_TIMEOUT,
        observers: Iterable[SessionObserver] = (),
        tracer_provider: Any = None,
        mcp: McpTools | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if not tool_timeout > 0:  # (NaN too)
            raise ValueError(
                f"tool_timeout must be a positive number of seconds, got {tool_timeout}"
            )
        if approval_timeout is not None and not approval_timeout > 0:
            raise ValueError(f"approval_timeout must be positive or None, got {approval_timeout}")
        self._nursery = nursery
        self.model = model
        self.mcp = mcp
        """The runtime's MCP servers (``open_runtime(mcp=[...])``), or ``None``."""
        self._own_tools = tuple(tools)
        self._tools_version = 0 if mcp is None else mcp.version
        self._registry = ToolRegistry(self._own_tools + (() if mcp is None else mcp.tools()))
        self._approval = ApprovalPolicy(self._registry, approval)
        self.approval_timeout = approval_timeout
        self.max_steps = max_steps
        self.limiter = trio.CapacityLimiter(tool_concurrency)
        self.tool_timeout = tool_timeout
        self.max_sessions = max_sessions
        self.log_max_events = log_max_events
        self.log_max_bytes = log_max_bytes
        self.session_log: SessionLog = log if log is not None else InMemory()
        self.observers: tuple[SessionObserver, ...] = tuple(observers)
        """What runs beside each session opened (see :data:`SessionObserver`)."""
        if tracer_provider is not None:
            # (imported here: only a runtime that traces needs OpenTelemetry)
            from ..tracing import SessionTracer

            self.observers += (SessionTracer(tracer_provider),)
        self.counters = RuntimeCounters()
        """What the runtime counts of its own work (see :meth:`statistics`)."""
        self._sessions: dict[str, Session] = {}
        self._closing = False

    @property
    def registry(self) -> ToolRegistry:
        """The runtime's tools: its own, then its MCP servers' as they list them now."""
        mcp = self.mcp
        if mcp is not None and mcp.version != self._tools_version:
            self._tools_version = mcp.version
            self._registry = ToolRegistry(self._own_tools + mcp.tools())
            self._approval.update(self._registry)
        return self._registry

    @property
    def approval(self) -> ApprovalPolicy:
        """Which calls wait for a person's approval (each tool's own ``approval``,
        overridden by ``open_runtime(approval={name: ...})``)."""
        self.registry  # noqa: B018 (brought up to date with the MCP servers' tools)
        return self._approval

    @property
    def sessions(self) -> Mapping[str, Session]:
        return self._sessions

    def get_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def open_session(self, session_id: str) -> Session:
        """The session ``session_id``: started now, or the live one with that id."""
        validate_session_id(session_id)
        while (existing := self._sessions.get(session_id)) is not None:
            if existing.closed:
                await existing.wait_closed()  # closing: the id is free once it is gone
                continue
            await existing.wait_started()  # (being started by another caller)
            await trio.lowlevel.checkpoint()
            if not existing.closed:
                return existing
        if self._closing:
            raise SessionClosed("the runtime is closing")
        if len(self._sessions) >= self.max_sessions:
            raise SessionLimitError(
                f"can't open session {session_id!r}: the runtime already holds "
                f"{self.max_sessions} sessions (max_sessions)"
            )
        host = self.session_log.host(
            session_id, max_events=self.log_max_events, max_bytes=self.log_max_bytes
        )
        session = Session(self, session_id, host.bus, host.view)
        self._sessions[session_id] = session
        try:
            await self._nursery.start(session.host, partial(host.run, session), self._forget)
        except BaseException:
            self._forget(session)
            raise
        if not session.closed:
            for observer in self.observers:
                self._nursery.start_soon(self._observe, observer, session)
        return session

    async def _observe(self, observer: SessionObserver, session: Session) -> None:
        try:
            await observer(session)
        except Exception:  # (one observer's failure is not the session's, nor the runtime's)
            logger.exception("session %r: observer %r failed", session.id, observer)

    def _forget(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            self.counters.session_closed(session.statistics())

    def statistics(self) -> RuntimeStatistics:
        """The sessions open now and what the runtime counted (tool durations, model
        errors and retries, events, drops and evictions, closed sessions' included)."""
        return self.counters.statistics(
            [(s.state.status, s.statistics()) for s in self._sessions.values()]
        )

    def close(self) -> None:
        """Begin leaving: no new sessions; every session task is cancelled (the
        ``open_runtime`` block does this on exit)."""
        self._closing = True
        self._nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_runtime(
    model: Model | None = None,
    tools: Iterable[Tool] = (),
    **options: Any,
) -> AsyncIterator[Runtime]:
    r"""``async with open_runtime(model=..., tools=[...]) as runtime:``

    ``model`` defaults to the built-in scripted demo model (offline).  Options:
    ``max_steps``, ``tool_concurrency``, ``tool_timeout``, ``max_sessions``,
    ``log_max_events``, ``log_max_bytes``, ``log`` (where sessions live, e.g.
    ``trio_agent.redis.open_redis_log(url)``; default: in memory), ``approval`` (tool
    name -> ``True``/``False``/a predicate on the arguments: which calls wait for a
    person's approval, over each tool's own ``approval``), ``approval_timeout``,
    ``observers`` (tasks run beside each session: :data:`SessionObserver`),
    ``tracer_provider`` (an OpenTelemetry ``TracerProvider``: each session's runs are
    traced, see :mod:`trio_agent.tracing`),
    ``mcp`` (:class:`~trio_agent.tools.McpServer`\ s whose tools the runtime offers
    too: each is connected, and its tools listed, before the runtime is yours —
    :class:`~trio_agent.errors.McpServerError` if one cannot be; needs the ``mcp``
    extra).  On exit every run still going ends ``cancelled``, every MCP server
    connection is closed, and every task is joined; the model's ``aclose()`` is called.
    """
    if model is None:
        from ..models.scripted import ScriptedModel

        model = ScriptedModel.demo()
    tools = tuple(tools)
    servers = tuple(options.pop("mcp", None) or ())
    for server in servers:
        if not isinstance(server, McpServer):
            raise TypeError(f"mcp takes McpServer values, got {type(server).__name__}")
    try:
        async with trio.open_nursery() as nursery:
            mcp = None
            if servers:
                from ..tools.mcp import McpTools

                mcp = McpTools(servers, reserved=[t.name for t in tools if isinstance(t, Tool)])
                await nursery.start(mcp.run)
            runtime = Runtime(nursery, model, tools, mcp=mcp, **options)
            try:
                yield runtime
            finally:
                runtime.close()
    except BaseExceptionGroup as group:
        # The body's exception (or a session task's) comes wrapped by the nursery: a
        # simple context manager re-raises it as it is.
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], trio.Cancelled):
            raise group.exceptions[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(MODEL_CLOSE_TIMEOUT):
            await model.aclose()
