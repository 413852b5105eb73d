"""``trio-agent serve --redis URL``: the options, and the log they ask for.

Apart from the Redis log itself so that the command line imports coredis only when
``--redis`` is given (in-memory serving needs no Redis client installed).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .redis.defaults import DEFAULT_LEASE_TTL, DEFAULT_PREFIX

if TYPE_CHECKING:
    from .redis import RedisLog

__all__ = ["add_redis_arguments", "open_log_from_args"]


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """``--redis URL`` and its companions, for ``trio-agent serve``."""
    parser.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="keep session logs and commands on Redis Streams (redis://HOST:PORT/DB), so "
        "that several processes serve the same sessions; default: in memory",
    )
    parser.add_argument(
        "--redis-prefix",
        default=DEFAULT_PREFIX,
        metavar="P",
        help=f"key prefix on Redis (default: {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=DEFAULT_LEASE_TTL,
        metavar="SECONDS",
        help="seconds before another process recovers the sessions of a process that died "
        f"(default: {DEFAULT_LEASE_TTL:g})",
    )


@asynccontextmanager
async def open_log_from_args(args: argparse.Namespace) -> AsyncIterator[RedisLog | None]:
    """The session log ``--redis`` asks for, or None (in memory)."""
    url = getattr(args, "redis", None)
    if not url:
        yield None
        return
    from .redis import open_redis_log

    async with open_redis_log(
        url,
        prefix=getattr(args, "redis_prefix", DEFAULT_PREFIX),
        lease_ttl=getattr(args, "lease_ttl", DEFAULT_LEASE_TTL),
    ) as log:
        yield log
