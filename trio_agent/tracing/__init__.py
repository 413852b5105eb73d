"""OpenTelemetry GenAI traces derived from the event log (``open_runtime(tracer_provider=...)``).

- :mod:`.tracer` — :class:`SessionTracer`: a lossless subscriber of each session (a
  ``SessionObserver`` the runtime runs beside it), re-attaching after an eviction;
- :mod:`.spans` — :class:`TraceBuilder`: the log, event by event, into ``invoke_agent``,
  ``chat`` and ``execute_tool`` spans, each emitted whole when its last event is read;
- :mod:`.ids` — trace and span ids derived from (session, run, step, call), the same in
  every process, so a run recovered elsewhere continues its trace.

Needs ``opentelemetry-api`` (the ``otel`` extra also brings the SDK and the OTLP
exporter that ``--otel`` uses).  Not imported by ``trio_agent`` itself: a runtime imports
it when it is given a tracer provider.
"""

from .ids import PresetIds, run_key, span_id, trace_id
from .spans import CONTENT_EVENTS, TraceBuilder
from .tracer import (
    CAPTURE_CONTENT_ENV,
    DEFAULT_AGENT_NAME,
    DEFAULT_TRACER_CAPACITY,
    DRAIN_TIMEOUT,
    SessionTracer,
    TracedSession,
)

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "CONTENT_EVENTS",
    "DEFAULT_AGENT_NAME",
    "DEFAULT_TRACER_CAPACITY",
    "DRAIN_TIMEOUT",
    "PresetIds",
    "SessionTracer",
    "TraceBuilder",
    "TracedSession",
    "run_key",
    "span_id",
    "trace_id",
]
