"""A forwarded command's verdict: how the owner names it, and what the forwarder raises.

The owner of a session decides every command a replica forwards and pushes its verdict
back (``RedisLog.reply``); the forwarding call raises what the same command raises in
one process, so a transport answers its client alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ..errors import RedisLogError, SessionClosed, SessionStateError

__all__ = ["VERDICTS", "raise_refusal"]


VERDICTS: Final[Mapping[str, Callable[[str], Exception]]] = {
    "bad_state": SessionStateError,
    "bad_command": ValueError,
    "closing": SessionClosed,
}
"""A forwarded command's refusals, as the owner names them in its verdict, and what the
forwarding call raises for each (with the owner's message): what the same command
raises in one process, so the server answers the client alike (``bad_state``,
``bad_command``, ``shutting_down``).  The one other verdict is ``accepted``."""


def raise_refusal(verdict: Mapping[str, Any]) -> None:
    """Nothing if the owner accepted the command; else what its refusal means."""
    code = verdict.get("verdict")
    message = str(verdict.get("message", ""))
    if code == "accepted":
        return
    refusal = VERDICTS.get(str(code))
    if refusal is None:
        raise RedisLogError(f"the owner answered with an unknown verdict {code!r}: {message}")
    raise refusal(message)
