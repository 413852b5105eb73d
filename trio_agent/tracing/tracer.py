"""``SessionTracer``: a session observer that turns the session's log into spans.

One more lossless subscriber of the session (``policy="block"``): it never drops an
event, and it cannot hold the agent for long — if it falls behind past its
``stall_timeout`` the bus evicts it, it says so (a warning) and re-attaches with
``after=`` the last event it read, so no span is lost.  It reads the log from its
oldest event (the runs already going when it attached — a session recovered from
Redis — are followed from their beginning) and emits each span when its last event is
read (:mod:`.spans`), if this process published that event (``Session.owner_since``).

Without ``capture_content`` it subscribes to every event type but the streamed text
(:data:`~.spans.CONTENT_EVENTS`), so the token path never waits for it.

Ownership: the runtime runs it in its nursery beside each session
(``open_runtime(tracer_provider=...)`` or ``observers=[SessionTracer(...)]``); it
returns when the session closes.  Cancelled (the runtime closing), it first reads what
the session's cleanup publishes (a run's ``done`` ``cancelled``), for at most
:data:`DRAIN_TIMEOUT`, so the runs the closing ends are traced too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any, Final, Protocol

import trio
from opentelemetry import trace

from .._bus import DEFAULT_STALL_TIMEOUT, EventLog, Subscription
from .._core.events import EVENT_TYPES
from ..errors import LogTrimmed, SubscriberEvicted
from .spans import CONTENT_EVENTS, TraceBuilder

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "DEFAULT_AGENT_NAME",
    "DEFAULT_TRACER_CAPACITY",
    "DRAIN_TIMEOUT",
    "SessionTracer",
    "TracedSession",
]

logger = logging.getLogger("trio_agent.tracing")

DEFAULT_TRACER_CAPACITY: Final = 1024
"""Events the tracer's subscription buffers: it reads in batches of what is waiting,
so this is how far a burst may run ahead of it before the agent waits — a few steps'
worth of tool and model events (tokens it does not read unless capturing content)."""

DRAIN_TIMEOUT: Final = 5.0
"""Seconds a cancelled tracer (the runtime closing) goes on reading its session's last
events — the ``done`` its cleanup publishes — before it gives up: the cleanup publishes
within the bounded ``CLEANUP_TIMEOUT`` too, and a closing runtime must not wait long."""

DEFAULT_AGENT_NAME: Final = "trio-agent"
"""``gen_ai.agent.name`` when none is given."""

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The conventions' opt-in for content ("true"), read when ``capture_content`` is None."""

TRACER_SCOPE: Final = "trio_agent"
"""The instrumentation scope of the tracer's spans."""


class TracedSession(Protocol):
    """What a tracer reads of a session (``trio_agent.Session`` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def log(self) -> EventLog: ...

    @property
    def owner_since(self) -> int | None: ...

    def open_subscription(self, **kwargs: Any) -> Subscription: ...


class SessionTracer:
    """Traces every session it is given (a ``SessionObserver``: ``await tracer(session)``
    follows one session until it closes).  See the module docstring.

    ``tracer_provider``: an OpenTelemetry ``TracerProvider`` (the SDK's, for the ids to
    carry across processes).  ``capture_content``: record prompts, arguments, results
    and answers (default: ``$OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is
    ``true``).  ``capacity``, ``stall_timeout``: its subscription's."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider,
        *,
        agent_name: str = DEFAULT_AGENT_NAME,
        capture_content: bool | None = None,
        capacity: int = DEFAULT_TRACER_CAPACITY,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ) -> None:
        if not agent_name:
            raise ValueError("agent_name must be a non-empty string")
        self.tracer = tracer_provider.get_tracer(TRACER_SCOPE)
        self.agent_name = agent_name
        if capture_content is None:
            capture_content = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"
        self.capture_content = capture_content
        self.capacity = capacity
        self.stall_timeout = stall_timeout
        self.evictions = 0
        """How often a subscription of this tracer was evicted (and re-attached)."""
        self.types: Collection[str] | None = (
            None if capture_content else sorted(EVENT_TYPES.keys() - CONTENT_EVENTS - {"state"})
        )

    def __repr__(self) -> str:
        return f"SessionTracer(agent_name={self.agent_name!r})"

    async def __call__(self, session: TracedSession) -> None:
        """Follow ``session`` until it closes, emitting its spans."""
        builder = TraceBuilder(
            self.tracer,
            session.id,
            agent_name=self.agent_name,
            capture_content=self.capture_content,
        )
        follower = _Follower(self, session, builder)
        try:
            follower.attach(max(0, session.log.first_seq - 1))
        except trio.ClosedResourceError:
            return  # (closed already)
        try:
            await follower.follow()
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_TIMEOUT):
                await follower.follow()
            raise
        finally:
            follower.close()


class _Follower:
    """One tracer on one session: its subscription, re-attached after an eviction."""

    def __init__(self, tracer: SessionTracer, session: TracedSession, builder: TraceBuilder):
        self.tracer = tracer
        self.session = session
        self.builder = builder
        self.sub: Subscription | None = None

    def attach(self, after: int) -> None:
        t = self.tracer
        self.sub = self.session.open_subscription(
            types=t.types,
            after=after,
            capacity=t.capacity,
            policy="block",
            stall_timeout=t.stall_timeout,
        )

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close()

    async def follow(self) -> None:
        """Read and trace until the session's log ends."""
        session, builder = self.session, self.builder
        while self.sub is not None:
            try:
                batch = await self.sub.receive_batch()
            except trio.EndOfChannel:
                return
            except SubscriberEvicted as exc:
                self.tracer.evictions += 1
                logger.warning(
                    "session %r: the tracer fell behind and was evicted (%s); "
                    "it re-attaches after seq %d",
                    session.id,
                    exc.reason,
                    exc.last_seq,
                )
                self.reattach(exc.last_seq)
                continue
            except LogTrimmed as exc:  # (re-attached too late: the log moved on)
                logger.warning("session %r: spans may be incomplete: %s", session.id, exc)
                self.reattach(session.log.first_seq - 1)
                continue
            since = session.owner_since
            feed = builder.feed
            for event in batch:
                feed(event, since is not None and event.seq > since)

    def reattach(self, after: int) -> None:
        self.close()
        self.sub = None
        try:
            self.attach(after)
        except LogTrimmed:
            self.attach(self.session.log.first_seq - 1)
        except trio.ClosedResourceError:
            return  # (the session closed meanwhile: nothing more to read)
