"""The interrupts an AG-UI run of ours ends with, and how their answers come back
(sans-I/O).

A run ends with an ``interrupt`` outcome when a tool call waits for a person's
approval (:data:`APPROVAL`, one interrupt per call, its ``toolCallId`` the call) or when
the run was paused by a soft or hard interrupt (:data:`PAUSED`).  An interrupt's id,
``kind:key@seq`` (:func:`interrupt_id`), says what it is about and the seq the run
ended at: the ``POST`` whose ``resume`` entries answer it starts its stream there, so
nothing our run did meanwhile is missed, and no server-side memory is needed to find
the place.  The answers' payloads follow :data:`APPROVAL_SCHEMA` (``approved``,
``reason``) and :data:`RESUME_SCHEMA` (``instruction``).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "APPROVAL",
    "APPROVAL_SCHEMA",
    "PAUSED",
    "RESUME_SCHEMA",
    "interrupt_id",
    "parse_interrupt_id",
]

APPROVAL: Final = "approval"
"""The kind of an interrupt asking whether a tool call may run."""
PAUSED: Final = "paused"
"""The kind of an interrupt saying the run was paused (a soft or hard interrupt)."""

APPROVAL_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean", "description": "run the call (default true)"},
        "reason": {"type": "string", "description": "why not (the model reads it)"},
    },
}
RESUME_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "instruction": {"type": "string", "description": "a message for the resumed run"}
    },
}

_SEQ: Final = re.compile(r"[0-9]{1,18}")
"""A seq in an interrupt id: as in ``Last-Event-ID``, at most 18 digits (a seq fits in
63 bits; a longer string is no id of ours, and ``int()`` of thousands of digits raises)."""


def interrupt_id(kind: str, key: str, seq: int) -> str:
    """``kind:key@seq``: what the interrupt is about (a call id, a run) and the seq its
    AG-UI run ended at, where the run that answers it starts."""
    return f"{kind}:{key}@{seq}"


def parse_interrupt_id(text: str) -> tuple[str, str, int] | None:
    """``(kind, key, seq)`` of an id made by :func:`interrupt_id`, or None."""
    kind, _, rest = text.partition(":")
    key, _, seq = rest.rpartition("@")
    if kind not in (APPROVAL, PAUSED) or not key or _SEQ.fullmatch(seq) is None:
        return None
    return kind, key, int(seq)
