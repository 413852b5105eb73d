"""How a failed model request is retried: :class:`RetryPolicy` and ``Retry-After``.

Only what failed before any of the response body was streamed is retried: HTTP 429,
5xx, failures to connect, and connections closed before any response.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable

import attrs

__all__ = [
    "BASE_DELAY",
    "DEFAULT_RETRY",
    "JITTER",
    "MAX_ATTEMPTS",
    "MAX_DELAY",
    "MAX_RETRY_AFTER",
    "RETRY_STATUSES",
    "RetryPolicy",
    "parse_retry_after",
]

#: Attempts in all (the first one included) for a retryable failure: enough to ride out
#: a brief overload, few enough that a user waiting on a dead endpoint learns it soon.
MAX_ATTEMPTS = 3
#: Seconds of backoff before the first retry; it doubles with each further attempt.
BASE_DELAY = 0.5
#: Ceiling on the exponential backoff, in seconds.
MAX_DELAY = 8.0
#: Ceiling on a server's ``Retry-After``, in seconds: a server asking for minutes is
#: better reported than silently waited for.
MAX_RETRY_AFTER = 30.0
#: Fraction of each backoff delay that is random ("jitter"), so that clients that failed
#: together do not retry together.
JITTER = 0.5
#: HTTP statuses retried besides 5xx: 429 is "too many requests".
RETRY_STATUSES = frozenset({429})


@attrs.frozen(slots=True)
class RetryPolicy:
    """How a failed model request is retried (before any of its body was streamed).

    ``max_attempts`` counts the first attempt.  The delay before retry *n* (1-based) is
    ``min(max_delay, base_delay * 2 ** (n - 1))``, of which the ``jitter`` fraction is
    random; a server's ``Retry-After`` (seconds or an HTTP date) replaces it, capped at
    ``max_retry_after``.
    """

    max_attempts: int = attrs.field(default=MAX_ATTEMPTS)
    base_delay: float = BASE_DELAY
    max_delay: float = MAX_DELAY
    max_retry_after: float = MAX_RETRY_AFTER
    jitter: float = JITTER

    @max_attempts.validator
    def _check_attempts(self, _attribute: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_attempts must be at least 1, not {value}")

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling * (1.0 - self.jitter * rand())

    def delay(
        self,
        attempt: int,
        retry_after: str | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """The wait before the next attempt: ``Retry-After`` if the server sent a valid
        one (capped), else :meth:`backoff`."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.max_retry_after)
        return self.backoff(attempt, rand)


#: The policy models use unless given another.
DEFAULT_RETRY = RetryPolicy()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or
    ``None`` when it is absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
