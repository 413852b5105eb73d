"""``GET /metrics``: a server's and its runtime's statistics in the Prometheus text format.

Each :class:`~trio_agent.transports.AgentServer` has its own ``prometheus_client``
``CollectorRegistry`` (no global state: two servers in one process export their own)
holding one collector, which reads ``AgentServer.statistics()`` and
``Runtime.statistics()`` when scraped — nothing is counted twice, and nothing is
counted on the hot path but what those statistics count anyway.  Behind the token,
as every endpoint (``Authorization: Bearer`` or ``?token=``).

The metrics (prefix ``trio_agent_``), their types and labels are listed in
docs/protocol.md ("Metrics"): sessions open, running and paused; clients by transport;
events published, sent, merged and dropped; evictions; commands refused by code; the
publish-to-send latency and the tool durations as histograms; model errors and retries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._core.histogram import HistogramSnapshot
from .http import Access, HTTPConnection, Refused, Request

if TYPE_CHECKING:
    from .server import AgentServer

__all__ = ["METRICS_PATH", "PREFIX", "ServerMetrics"]

METRICS_PATH: Final = "/metrics"
PREFIX: Final = "trio_agent_"


class ServerMetrics:
    """One server's ``/metrics``: its registry and the collector that reads it."""

    def __init__(self, server: AgentServer) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StatisticsCollector(server))

    def render(self) -> bytes:
        """The metrics now, in the Prometheus text format."""
        return generate_latest(self.registry)

    async def respond(self, http: HTTPConnection, request: Request, access: Access) -> None:
        """Answer ``GET`` / ``HEAD /metrics``: 200 with the metrics, or the refusal
        (400 for an unknown query parameter, 401 without the token, 403 for a browser
        origin not allowed)."""
        try:
            params = request.params(("token",))
            access.check(request, params.get("token"))
        except Refused as refused:
            await http.refuse(refused)
            return
        await http.respond(
            200, self.render(), content_type=CONTENT_TYPE_LATEST, head_only=request.method == "HEAD"
        )


class _StatisticsCollector(Collector):
    """Reads the statistics at scrape time (see the module docstring)."""

    def __init__(self, server: AgentServer) -> None:
        self.server = server

    def describe(self) -> list[Metric]:
        return []  # (known only when collected: registering must not scrape)

    def collect(self) -> Iterator[Metric]:
        server = self.server.statistics()
        runtime = self.server.runtime.statistics()
        yield _gauge("sessions_open", "Sessions open.", runtime.sessions)
        yield _gauge("sessions_running", "Sessions thinking or acting.", runtime.sessions_running)
        yield _gauge("sessions_paused", "Sessions interrupted.", runtime.sessions_paused)
        clients = GaugeMetricFamily(
            PREFIX + "clients", "Clients connected, by transport.", labels=["transport"]
        )
        for transport, n in sorted(server.clients_by_transport.items()):
            clients.add_metric([transport], n)
        yield clients
        yield _counter(
            "events_published", "Events in the logs of the sessions.", runtime.events_published
        )
        yield _counter(
            "events_sent", "Events sent to clients (merged ones counted).", server.events_sent
        )
        yield _counter(
            "events_merged", "Events merged into the one before them.", server.events_merged
        )
        yield _counter("frames_sent", "Frames of events sent to clients.", server.frames_sent)
        yield _counter(
            "events_dropped", "Events dropped by drop_oldest subscribers.", runtime.events_dropped
        )
        yield _counter(
            "subscribers_evicted", "Lossless subscribers evicted (stalled).", runtime.evictions
        )
        yield _by_code(
            "commands_refused", "Client commands refused, by error code.", server.commands_refused
        )
        if server.send_latency is not None:
            latency = HistogramMetricFamily(
                PREFIX + "publish_to_send_seconds",
                "Per live frame: from the publish of its oldest event to the frame sent.",
                unit="seconds",
            )
            _add(latency, [], server.send_latency)
            yield latency
        tools = HistogramMetricFamily(
            PREFIX + "tool_duration_seconds",
            "Tool calls run here, by tool and how they ended.",
            labels=["tool", "status"],
            unit="seconds",
        )
        for (tool, status), snapshot in sorted(runtime.tool_calls.items()):
            _add(tools, [tool, status], snapshot)
        yield tools
        yield _by_code("model_errors", "Model calls that failed, by code.", runtime.model_errors)
        yield _by_code(
            "model_retries", "Model calls retried after a failure, by code.", runtime.model_retries
        )
        yield _counter("http_requests", "Plain HTTP requests.", server.http_requests)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _by_code(name: str, documentation: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=["code"])
    for code, n in sorted(counts.items()):
        family.add_metric([code], n)
    return family


def _add(family: HistogramMetricFamily, labels: list[str], snapshot: HistogramSnapshot) -> None:
    # (one pair per bucket: a histogram's buckets are fixed when it is made)
    buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in snapshot.cumulative()]
    family.add_metric(labels, buckets, snapshot.sum)
