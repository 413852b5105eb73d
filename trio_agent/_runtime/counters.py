"""What a runtime counts of its own work, for ``Runtime.statistics()``.

The runtime counts where things happen — a tool call ending (its duration), a model
call failing or being retried — and what its sessions leave behind when they close
(their events, drops and evictions), so that its statistics are monotonic counters
whatever sessions come and go.  A scrape of ``GET /metrics`` reads them
(``trio_agent.transports.metrics``); nothing is global: each runtime counts its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

from .._bus import BusStatistics
from .._core.histogram import Histogram, HistogramSnapshot

__all__ = ["TOOL_DURATION_BUCKETS", "UNKNOWN_TOOL", "RuntimeCounters", "RuntimeStatistics"]

TOOL_DURATION_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0
)  # fmt: skip
"""Seconds, the upper bounds of the tool-duration buckets: from an in-process function
(a millisecond) to the default ``tool_timeout`` (60 s) and past it."""

UNKNOWN_TOOL: Final = "<unknown>"
"""The tool a call is counted under when the model named a tool the runtime does not
have: the names in statistics (and the ``tool`` label of ``/metrics``) are the
runtime's, never whatever a model makes up — one histogram per invented name would grow
without end."""


@attrs.frozen(slots=True)
class RuntimeStatistics:
    """A runtime's sessions and what it counted (``Runtime.statistics()``)."""

    sessions: int
    """Sessions open now."""
    sessions_by_status: Mapping[str, int]
    """Open sessions by their state's status (``thinking``, ``interrupted``, …)."""
    events_published: int
    """Events in the logs of the sessions this runtime has held (open or closed since;
    with a shared log, what this process replayed of other processes' too)."""
    events_dropped: int
    """Events dropped by ``drop_oldest`` subscribers of those sessions."""
    evictions: int
    """Lossless subscribers evicted (stalled) from those sessions."""
    tool_calls: Mapping[tuple[str, str], HistogramSnapshot]
    """``(tool, status)`` → the durations (seconds) of the calls this runtime ran that
    ended so (``ok``, ``error``, ``timeout``, ``cancelled``); a call of a tool the
    runtime has not is counted under :data:`UNKNOWN_TOOL`."""
    model_errors: Mapping[str, int]
    """Model calls that failed, by error code."""
    model_retries: Mapping[str, int]
    """Model calls retried after a retryable failure, by error code."""

    @property
    def sessions_running(self) -> int:
        return sum(self.sessions_by_status.get(s, 0) for s in ("thinking", "acting"))

    @property
    def sessions_paused(self) -> int:
        return self.sessions_by_status.get("interrupted", 0)


@attrs.define(slots=True)
class RuntimeCounters:
    """The runtime's own counts (see the module docstring)."""

    tool_durations: dict[tuple[str, str], Histogram] = attrs.field(factory=dict)
    model_errors: dict[str, int] = attrs.field(factory=dict)
    model_retries: dict[str, int] = attrs.field(factory=dict)
    closed_events: int = 0
    closed_dropped: int = 0
    closed_evictions: int = 0

    def tool_finished(self, tool: str, status: str, seconds: float) -> None:
        histogram = self.tool_durations.get((tool, status))
        if histogram is None:
            histogram = self.tool_durations[(tool, status)] = Histogram(TOOL_DURATION_BUCKETS)
        histogram.observe(seconds)

    def model_error(self, code: str) -> None:
        self.model_errors[code] = self.model_errors.get(code, 0) + 1

    def model_retry(self, code: str) -> None:
        self.model_retries[code] = self.model_retries.get(code, 0) + 1

    def session_closed(self, stats: BusStatistics) -> None:
        """A session closed: keep what it counted."""
        self.closed_events += stats.last_seq
        self.closed_dropped += stats.dropped
        self.closed_evictions += stats.evictions

    def statistics(self, buses: list[tuple[str, BusStatistics]]) -> RuntimeStatistics:
        """With ``buses``: each open session's status and bus statistics."""
        by_status: dict[str, int] = {}
        for status, _ in buses:
            by_status[status] = by_status.get(status, 0) + 1
        return RuntimeStatistics(
            sessions=len(buses),
            sessions_by_status=by_status,
            events_published=self.closed_events + sum(b.last_seq for _, b in buses),
            events_dropped=self.closed_dropped + sum(b.dropped for _, b in buses),
            evictions=self.closed_evictions + sum(b.evictions for _, b in buses),
            tool_calls={k: h.snapshot() for k, h in self.tool_durations.items()},
            model_errors=dict(self.model_errors),
            model_retries=dict(self.model_retries),
        )
