"""Which of the sessions a server opened have gone idle: :class:`IdleSessions`,
sans-I/O (times are passed in), and how often the server asks it (``IDLE_CHECKS``)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from .._runtime import Session

__all__ = ["IDLE_CHECKS", "IdleSessions"]

IDLE_CHECKS: Final = 4
"""Times per ``session_idle_timeout`` the server looks for idle sessions: one is closed
between one and one and a quarter timeouts after it fell idle, for a scan of every session
four times per timeout."""


class IdleSessions:
    """Which of the sessions a server opened have been idle for ``timeout`` seconds:
    no client, no run going or paused, no event.  Sans-I/O: the server tells it when
    it opened a session and when a client left, and asks it now and then
    (``IDLE_CHECKS`` times per timeout) which to close."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: dict[Session, tuple[int, float]] = {}  # last seq seen, last active
        self._left: dict[Session, float] = {}  # when a client last left it

    def __contains__(self, session: object) -> bool:
        return session in self._seen

    def add(self, session: Session, now: float) -> None:
        self._seen.setdefault(session, (session.state.seq, now))

    def left(self, session: Session, now: float) -> None:
        if session in self._seen:
            self._left[session] = now

    def expired(self, now: float, watched: Collection[Session | None]) -> list[Session]:
        """The sessions to close now (forgotten here as they are returned)."""
        out: list[Session] = []
        for session, (seq, since) in list(self._seen.items()):
            left = self._left.pop(session, since)
            if session.closed:
                del self._seen[session]
                continue
            # (what the session shows: on Redis, what is durable)
            state = session.state
            if (
                session in watched
                or state.running
                or state.status == "interrupted"
                or state.seq != seq  # something happened since the last look
            ):
                since = now
            since = max(since, left)  # a client came and went between two looks
            if now - since >= self.timeout:
                del self._seen[session]
                out.append(session)
            else:
                self._seen[session] = (state.seq, since)
        return out
