"""Where a runtime's sessions live: the backend seam (``open_runtime(log=...)``).

A backend makes, for each session, a :class:`SessionHost`: the session's two buses and
the task that serves it.  The runtime hands the buses to the new
:class:`~trio_agent._runtime.session.Session` and runs ``host.run(session)`` in its
nursery; the session is forgotten when that task ends.

- In memory (:class:`InMemory`, the default) the working bus and the visible bus are
  one, and ``run`` is ``session.serve``: the agent loop.
- On Redis (:class:`trio_agent.redis.RedisLog`) the visible bus holds only what Redis
  made durable, and ``run`` replays the log, then owns the session (``session.serve``)
  or replicates it (``session.route_commands``), taking it over when its owner dies
  (``session.recover``).

A backend calls ``task_status.started()`` once the session shows its log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from .._bus import EventBus, EventLog

if TYPE_CHECKING:
    from .session import Session

__all__ = ["InMemory", "SessionHost", "SessionLog"]


class SessionHost(Protocol):
    """One session's place in a backend: its buses, and the task that serves it."""

    @property
    def bus(self) -> EventBus:
        """The working bus: the agent loop publishes here."""

    @property
    def view(self) -> EventBus:
        """The visible bus: what the session shows and its clients read."""

    async def run(self, session: Session, *, task_status: trio.TaskStatus[None]) -> None:
        """Serve ``session`` until cancelled; ``task_status.started()`` once it shows
        its log."""


class SessionLog(Protocol):
    """A backend: where a runtime's sessions live (``open_runtime(log=...)``)."""

    def host(self, session: str, *, max_events: int, max_bytes: int) -> SessionHost:
        """The place of session ``session``, its logs bounded as the runtime says."""


class _InMemoryHost:
    def __init__(self, session: str, max_events: int, max_bytes: int) -> None:
        self.bus = self.view = EventBus(session, log=EventLog(max_events, max_bytes))

    async def run(self, session: Session, *, task_status: trio.TaskStatus[None]) -> None:
        await session.serve(task_status=task_status)


class InMemory:
    """The default backend: each session's log in this process's memory."""

    def host(self, session: str, *, max_events: int, max_bytes: int) -> SessionHost:
        return _InMemoryHost(session, max_events, max_bytes)
