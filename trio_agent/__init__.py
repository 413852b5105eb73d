"""trio-agent: a structured-concurrency runtime, on trio, for LLM agents that stream.

The public surface (DESIGN §4)::

    async with trio_agent.open_runtime(model=model, tools=[calculator]) as runtime:
        session = await runtime.open_session("s1")
        async with session.subscribe(after=0) as events:
            await session.send("what is 2+2?")
            async for event in events: ...

Submodules: :mod:`trio_agent.errors` (every exception, Closed vs Broken),
:mod:`trio_agent.events` (event types and the wire codec),
:mod:`trio_agent.models` (the model protocol and providers),
:mod:`trio_agent.transports` (the sessions over WebSocket, and the page, on one port),
:mod:`trio_agent.testing` (helpers for testing agents), :mod:`trio_agent.cli` (the
``trio-agent`` command line).
"""

from ._bus import (
    DEFAULT_CAPACITY,
    DEFAULT_LOG_MAX_BYTES,
    DEFAULT_LOG_MAX_EVENTS,
    DEFAULT_STALL_TIMEOUT,
    MAX_CAPACITY,
    BusStatistics,
    EventBus,
    EventLog,
    SubscriberStatistics,
    Subscription,
)
from ._core.reduce import reduce
from ._core.state import State, ToolCallState, initial_state
from ._core.text import Text
from ._runtime import (
    CLEANUP_TIMEOUT,
    DEFAULT_APPROVAL_TIMEOUT,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_STEPS,
    DEFAULT_TOOL_CONCURRENCY,
    DEFAULT_TOOL_TIMEOUT,
    Applied,
    Runtime,
    Session,
    open_runtime,
)
from .errors import (
    LogTrimmed,
    ModelError,
    ProtocolError,
    ReduceError,
    SessionClosed,
    SessionLimitError,
    SessionLogError,
    SessionStateError,
    SubscriberEvicted,
    TrioAgentError,
)
from .events import Event
from .tools import Tool, ToolOutcome, ToolRegistry, calculator, sleep, tool
from .transports import AgentServer, ServerLimits, serve_websocket

__all__ = [
    "CLEANUP_TIMEOUT",
    "DEFAULT_APPROVAL_TIMEOUT",
    "DEFAULT_CAPACITY",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_LOG_MAX_EVENTS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_STALL_TIMEOUT",
    "DEFAULT_TOOL_CONCURRENCY",
    "DEFAULT_TOOL_TIMEOUT",
    "MAX_CAPACITY",
    "AgentServer",
    "Applied",
    "BusStatistics",
    "Event",
    "EventBus",
    "EventLog",
    "LogTrimmed",
    "ModelError",
    "ProtocolError",
    "ReduceError",
    "Runtime",
    "ServerLimits",
    "Session",
    "SessionClosed",
    "SessionLimitError",
    "SessionLogError",
    "SessionStateError",
    "State",
    "SubscriberEvicted",
    "SubscriberStatistics",
    "Subscription",
    "Text",
    "Tool",
    "ToolCallState",
    "ToolOutcome",
    "ToolRegistry",
    "TrioAgentError",
    "calculator",
    "initial_state",
    "open_runtime",
    "reduce",
    "serve_websocket",
    "sleep",
    "tool",
]

__version__ = "0.1.0"
