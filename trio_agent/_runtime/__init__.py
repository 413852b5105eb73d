"""The runtime: sessions, their commands, and the agent loop.

- :mod:`.control` — :class:`RunControl`, where a session's commands meet its loop;
- :mod:`.publish` — the shielded, bounded publish of cleanup paths;
- :mod:`.loop` — :class:`AgentLoop`: runs, steps, the model stream, tool calls;
- :mod:`.session` — :class:`Session`: what it shows, its commands, its lifecycle, and
  the seams a backend uses (``serve``, ``route_commands``, ``recover``);
- :mod:`.backend` — the backend seam (:class:`SessionLog`, :class:`SessionHost`) and the
  in-memory default;
- :mod:`.counters` — what a runtime counts for ``Runtime.statistics()``;
- :mod:`.runtime` — :class:`Runtime` and :func:`open_runtime`.
"""

from .backend import InMemory, SessionHost, SessionLog
from .calls import ToolCalls, close_open_calls
from .control import RunControl
from .counters import TOOL_DURATION_BUCKETS, UNKNOWN_TOOL, RuntimeCounters, RuntimeStatistics
from .loop import YIELD_EVERY, AgentLoop
from .publish import CLEANUP_TIMEOUT, publish_shielded
from .runtime import (
    DEFAULT_APPROVAL_TIMEOUT,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_STEPS,
    DEFAULT_TOOL_CONCURRENCY,
    DEFAULT_TOOL_TIMEOUT,
    Runtime,
    SessionObserver,
    open_runtime,
)
from .session import SESSION_ID_RE, Applied, CommandRouter, Session, validate_session_id

__all__ = [
    "CLEANUP_TIMEOUT",
    "DEFAULT_APPROVAL_TIMEOUT",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_TOOL_CONCURRENCY",
    "DEFAULT_TOOL_TIMEOUT",
    "SESSION_ID_RE",
    "TOOL_DURATION_BUCKETS",
    "UNKNOWN_TOOL",
    "YIELD_EVERY",
    "AgentLoop",
    "Applied",
    "CommandRouter",
    "InMemory",
    "RunControl",
    "Runtime",
    "RuntimeCounters",
    "RuntimeStatistics",
    "Session",
    "SessionHost",
    "SessionLog",
    "SessionObserver",
    "ToolCalls",
    "close_open_calls",
    "open_runtime",
    "publish_shielded",
    "validate_session_id",
]
