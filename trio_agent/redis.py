"""Sessions past one process, on Redis Streams (see docs/redis.md).

Needs the ``redis`` extra (``pip install 'trio-agent[redis]'``, which pins coredis)::

    from trio_agent.redis import open_redis_log

    async with (
        open_redis_log("redis://127.0.0.1:6379/0") as log,
        trio_agent.open_runtime(model=model, tools=tools, log=log) as runtime,
    ):
        session = await runtime.open_session("s1")  # owned here, or a replica
"""

from ._redis import (
    COMMAND_REPLY_TIMEOUT,
    DEFAULT_BLOCK,
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_PREFIX,
    RELAY_CAPACITY,
    LeaseLost,
    RedisLog,
    RedisLogError,
    open_redis_log,
)

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
    "open_redis_log",
]
