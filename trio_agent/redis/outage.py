"""Telling "Redis is unreachable" from other errors, and how long to wait to try again."""

from __future__ import annotations

import coredis
from coredis.exceptions import RedisError

from .defaults import BACKOFF_MAX, BACKOFF_MIN

__all__ = ["backoff", "unavailable"]


def unavailable(exc: BaseException) -> bool:
    """``exc`` says Redis could not be reached or answered no more (coredis raises
    some of these from inside its task groups, as exception groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(unavailable(e) for e in exc.exceptions)
    return isinstance(exc, RedisError | OSError) and not isinstance(
        exc, coredis.exceptions.ResponseError
    )


def backoff(attempt: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt))
