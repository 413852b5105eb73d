"""Trace and span ids derived from the log, so that every process derives the same.

A run's trace id is a hash of its session, its number and the time of its
``run_started`` event — all in the log, identical in every process that reads it (the
time keeps two sessions that share an id at different times, or in two deployments,
apart).  Each span id is a hash of the run's key and what the span is: the run itself,
a step's model call, a tool call.  So a process that recovers a run from Redis emits
its spans into the trace the dead owner began, under the parents it began.

OpenTelemetry's SDK makes ids with its tracer's ``id_generator``; :class:`PresetIds`
wraps that generator and hands out the ids set for the next span (falling back to the
original for anything else).  A provider without one (not the SDK's) makes its own
span ids; the trace id still carries over to every span but the run's own.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

__all__ = ["PresetIds", "RunKey", "preset_ids", "run_key", "span_id", "trace_id"]

RunKey = bytes
"""What identifies one run of one session, in every process: see :func:`run_key`."""

_SEP: Final = b"\x1f"  # (unit separator: in no session id, see SESSION_ID_RE)


def run_key(session: str, run: int, started: float | None) -> RunKey:
    """The key of run ``run`` of ``session`` that began at ``started`` (its
    ``run_started`` event's ``ts``; None when the log no longer holds it: then two
    incarnations of a session id can share a trace id)."""
    parts = [session.encode(), str(run).encode()]
    if started is not None:
        parts.append(repr(float(started)).encode())  # (the shortest round-trip form)
    return _SEP.join(parts)


def _digest(data: bytes, size: int) -> int:
    value = int.from_bytes(hashlib.blake2b(data, digest_size=size).digest(), "big")
    return value or 1  # (all zeros is the invalid id)


def trace_id(key: RunKey) -> int:
    """The 128-bit trace id of the run ``key``."""
    return _digest(key, 16)


def span_id(key: RunKey, *what: str | int) -> int:
    """The 64-bit id of the span ``what`` (``"invoke_agent"``, ``("chat", step)``,
    ``("execute_tool", step, call_id)``) in the run ``key``."""
    return _digest(_SEP.join([key, *(str(part).encode() for part in what)]), 8)


class PresetIds:
    """An SDK ``IdGenerator`` that hands out preset ids: :meth:`set` the ids, then start
    the span (in the same synchronous step); other spans get the wrapped generator's."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.trace: int | None = None
        self.span: int | None = None

    def set(self, trace: int, span: int) -> None:
        self.trace, self.span = trace, span

    def generate_trace_id(self) -> int:
        trace, self.trace = self.trace, None
        return trace if trace is not None else int(self.fallback.generate_trace_id())

    def generate_span_id(self) -> int:
        span, self.span = self.span, None
        return span if span is not None else int(self.fallback.generate_span_id())

    def is_trace_id_random(self) -> bool:
        # (a hash, not the W3C "random" trace id: a sampler must not count on its bits)
        return False


def preset_ids(tracer: Any) -> PresetIds | None:
    """The :class:`PresetIds` of an SDK ``tracer`` (installed on first use; a tracer of
    a scope is shared by the provider's callers, and the wrapper falls back for them),
    or None for a tracer that has no ``id_generator``."""
    current = getattr(tracer, "id_generator", None)
    if current is None:
        return None
    if isinstance(current, PresetIds):
        return current
    preset = PresetIds(current)
    tracer.id_generator = preset
    return preset
