"""Publishing from inside the runtime: the shielded, bounded publish of cleanup paths.

Cleanup must say what happened even though the scope around it is cancelled: a
``cancelled`` tool result, ``interrupted``, ``done``, a command's events after its
first.  :func:`publish_shielded` publishes at once when every subscriber has room (no
scheduler round trip on the interrupt path), else waits shielded — bounded: a full
lossless subscriber is evicted after its stall timeout, and one that cannot be (the
Redis relay while Redis is down) is given up on after :data:`CLEANUP_TIMEOUT`.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from .._bus import EventBus
from .._core import events as ev

__all__ = ["CLEANUP_TIMEOUT", "publish_shielded"]

logger = logging.getLogger("trio_agent")

CLEANUP_TIMEOUT: Final = 30.0
"""Seconds a cleanup publish (a ``cancelled`` tool result, ``interrupted``, ``done``)
may wait, shielded, for a full subscriber.  A lossless subscriber is evicted after its
stall timeout long before this; the bound is for one that cannot be (the Redis relay
while Redis is down), so that leaving the runtime can never hang."""


async def publish_shielded(bus: EventBus, event: ev.Event) -> bool:
    """Publish ``event`` (unstamped) even if the caller is cancelled, within
    :data:`CLEANUP_TIMEOUT`; False (logged) if it could not be published in time."""
    try:
        bus.publish_nowait(event)
    except trio.WouldBlock:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
            await bus.publish(event)
        if scope.cancelled_caught:
            logger.error(
                "session %r: could not publish %r within %gs (CLEANUP_TIMEOUT): a "
                "subscriber that cannot be evicted is full",
                bus.session,
                event.type,
                CLEANUP_TIMEOUT,
            )
            return False
    return True
