"""The tracer provider of ``--otel``: the OpenTelemetry SDK exporting OTLP over
HTTP/protobuf, configured by the standard environment variables.

``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; default
``http://localhost:4318``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``…_TIMEOUT``,
``…_COMPRESSION``, ``…_CERTIFICATE`` are the exporter's; ``OTEL_BSP_*`` the batching
processor's; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` the resource's (the
service is ``trio-agent`` unless they name one); ``OTEL_TRACES_SAMPLER`` the sampler.

Spans are queued by a ``BatchSpanProcessor`` and sent from its own thread, so an
exporter that is slow or unreachable never blocks trio.  Call :func:`shutdown` (in a
worker thread: it waits for the last batch, bounded by the exporter's timeout) before
the program exits.  Needs the ``otel`` extra.
"""

from __future__ import annotations

from typing import Final

import trio
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = ["SERVICE", "otlp_provider", "shutdown"]

SERVICE: Final = "trio-agent"
"""``service.name`` when the environment names none."""


def otlp_provider() -> TracerProvider:
    """An SDK provider that batches spans to OTLP/HTTP, as the environment says."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


async def shutdown(provider: TracerProvider) -> None:
    """Flush what is queued and stop (in a worker thread, shielded: at exit)."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(provider.shutdown)
