"""Sessions past one process, on Redis Streams (see docs/redis.md).

Needs the ``redis`` extra (``pip install 'trio-agent[redis]'``, which pins coredis)::

    from trio_agent.redis import open_redis_log

    async with (
        open_redis_log("redis://127.0.0.1:6379/0") as log,
        trio_agent.open_runtime(model=model, tools=tools, log=log) as runtime,
    ):
        session = await runtime.open_session("s1")  # owned here, or a replica

- :mod:`.defaults` — the named defaults (no coredis needed to read them);
- :mod:`.scripts` — the Lua scripts (append fenced by lease and seq, lease renewal);
- :mod:`.log` — :class:`RedisLog`: keys, the log, leases, forwarded commands;
- :mod:`.replica` — :class:`SessionReplica`: one session in one process, owner or
  replica.

The names that need coredis are imported when first used, so that ``--help`` and the
defaults work without the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import LeaseLost, RedisLogError
from .defaults import (
    COMMAND_REPLY_TIMEOUT,
    DEFAULT_BLOCK,
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_PREFIX,
    RELAY_CAPACITY,
)

if TYPE_CHECKING:
    from .log import RedisLog, RedisStatistics, open_redis_log
    from .replica import SessionReplica

__all__ = [
    "COMMAND_REPLY_TIMEOUT",
    "DEFAULT_BLOCK",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_PREFIX",
    "RELAY_CAPACITY",
    "LeaseLost",
    "RedisLog",
    "RedisLogError",
    "RedisStatistics",
    "SessionReplica",
    "open_redis_log",
]

_LAZY = {
    "RedisLog": ".log",
    "RedisStatistics": ".log",
    "open_redis_log": ".log",
    "SessionReplica": ".replica",
}

INSTALL_HINT = "pip install 'trio-agent[redis]'"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module, __name__), name)
    except ModuleNotFoundError as exc:
        if exc.name != "coredis":
            raise
        raise ModuleNotFoundError(
            f"trio_agent.redis.{name} needs coredis, which is not installed: {INSTALL_HINT}",
            name="coredis",
        ) from None
