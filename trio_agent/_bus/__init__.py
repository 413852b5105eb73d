"""The bus and the log: one writer per session, bounded fan-out, replay-then-live.

- :mod:`.log` — :class:`EventLog`, the bounded, ordered log of one session;
- :mod:`.subscription` — :class:`Subscription`, one subscriber's bounded channel, and
  the :class:`Inbox` it shares with the bus;
- :mod:`.bus` — :class:`EventBus`: seq, log, reduced state, fan-out.
"""

from .bus import FOLD_EVERY, BusStatistics, EventBus
from .log import DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_EVENTS, TRIM_SLACK, EventLog, event_size
from .subscription import (
    DEFAULT_CAPACITY,
    DEFAULT_STALL_TIMEOUT,
    MAX_CAPACITY,
    POLICIES,
    REPLAY_BATCH,
    Inbox,
    Policy,
    SubscriberStatistics,
    Subscription,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_LOG_MAX_EVENTS",
    "DEFAULT_STALL_TIMEOUT",
    "FOLD_EVERY",
    "MAX_CAPACITY",
    "POLICIES",
    "REPLAY_BATCH",
    "TRIM_SLACK",
    "BusStatistics",
    "EventBus",
    "EventLog",
    "Inbox",
    "Policy",
    "SubscriberStatistics",
    "Subscription",
    "event_size",
]
