"""Every exception trio-agent raises on purpose, in one hierarchy.

All of them are :class:`TrioAgentError`.  As in trio, what *your* code closed and what
*the world* broke are different errors, and each is also the trio error a trio program
already catches:

- **Closed** (``trio.ClosedResourceError``): :class:`SessionClosed` — the session (or
  its runtime) was closed by its owner; nothing more can be done with it.  (Using a
  subscription you closed yourself raises ``trio.ClosedResourceError`` as trio's own
  channels do.)
- **Broken** (``trio.BrokenResourceError``): the world broke it, and the message says
  how to go on — :class:`LogTrimmed` (the events asked for are no longer in the log:
  re-attach without ``after``), :class:`SubscriberEvicted` (the bus dropped a
  subscriber that stopped reading: re-attach with ``after=last_seq``),
  :class:`SessionLogError` and its Redis kinds (the shared log failed an operation).
- **Refusals** of a request that makes no sense now, nothing changed:
  :class:`SessionStateError` (a command in the wrong state), :class:`SessionLimitError`
  (a bound reached), :class:`ReduceError` (an event illegal in the state),
  :class:`AssemblerError` (a tool-call chunk illegal in the assembler's state).
- **Bad input**: :class:`ProtocolError` (an event or wire frame that does not follow
  the protocol) and :class:`CommandError` (a client command, with its wire ``code``).
- **Failures of a model call**: :class:`ModelError` (after any retries), with a code.
- **Failures of an MCP server**: :class:`McpServerError` (it could not be started or
  its tools listed when the runtime opened).

This module imports nothing of the package: every layer may raise these.
"""

from __future__ import annotations

import trio

__all__ = [
    "AssemblerError",
    "CommandError",
    "LeaseLost",
    "LogTrimmed",
    "McpServerError",
    "ModelError",
    "ProtocolError",
    "RedisLogError",
    "ReduceError",
    "SessionClosed",
    "SessionLimitError",
    "SessionLogError",
    "SessionStateError",
    "SubscriberEvicted",
    "TrioAgentError",
]


class TrioAgentError(Exception):
    """The base of every error trio-agent raises on purpose."""


# ---- closed: your code closed it ---------------------------------------------------


class SessionClosed(TrioAgentError, trio.ClosedResourceError):
    """The session was closed (``Session.aclose``, or its runtime is closing): it takes
    no more commands or subscribers."""


# ---- broken: the world broke it ----------------------------------------------------


class LogTrimmed(TrioAgentError, trio.BrokenResourceError):
    """Events after ``after`` were asked for, but the log no longer holds them all
    (``oldest`` is the oldest seq it still holds): re-attach without ``after`` and
    start from a state snapshot."""

    def __init__(self, after: int, oldest: int) -> None:
        super().__init__(
            f"events after seq {after} were trimmed from the log; "
            f"the oldest seq still held is {oldest}"
        )
        self.after = after
        self.oldest = oldest


class SubscriberEvicted(TrioAgentError, trio.BrokenResourceError):
    """The bus evicted this subscriber; ``reason`` says why, ``last_seq`` is the last
    event it received (re-attach with ``after=last_seq`` to replay the rest)."""

    def __init__(self, reason: str, last_seq: int) -> None:
        super().__init__(f"subscriber evicted: {reason} (last seq received: {last_seq})")
        self.reason = reason
        self.last_seq = last_seq


class SessionLogError(TrioAgentError, trio.BrokenResourceError):
    """The shared session log (``open_runtime(log=...)``) failed an operation: a command
    could not be delivered to the session's owner, say.  The message says which."""


class RedisLogError(SessionLogError):
    """Redis refused or failed an operation on a session log; the message says which."""


class LeaseLost(RedisLogError):
    """This process no longer owns the session (another one took the lease)."""


# ---- refusals: nothing changed -----------------------------------------------------


class SessionStateError(TrioAgentError, RuntimeError):
    """A command that makes no sense in the session's current state (nothing changed);
    the message names the command, the session and its state."""


class SessionLimitError(TrioAgentError, RuntimeError):
    """The runtime holds as many sessions as it may (``max_sessions``)."""


class ReduceError(TrioAgentError, RuntimeError):
    """An event that is illegal in the current state (the state is unchanged)."""


class AssemblerError(TrioAgentError, RuntimeError):
    """A tool-call chunk the assembler cannot accept in its state (a provider or caller
    bug).  The assembler is left exactly as it was before the input."""


# ---- bad input ---------------------------------------------------------------------


class ProtocolError(TrioAgentError, ValueError):
    """Input that does not follow the event or wire protocol; the message says why."""


class CommandError(ProtocolError):
    """A client frame that is not a valid command.  ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---- a model call failed -----------------------------------------------------------


class ModelError(TrioAgentError):
    """A model call failed for good (after any retries).

    ``code`` is a short machine-readable name (``auth``, ``bad_request``, ``timeout``,
    ``connection``, ``rate_limited``, ``server_error``, ``protocol``); ``message`` says
    what happened in words a user can act on.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


# ---- an MCP server failed ------------------------------------------------------------


class McpServerError(TrioAgentError):
    """An MCP server (``open_runtime(mcp=[...])``, ``--mcp``) could not be started, or
    its tools listed, when the runtime opened.  ``server`` is its name; the message
    says what happened.  (Once a runtime is open, a server that fails makes its calls
    end ``error`` instead, and is restarted on the next call.)"""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(message)
        self.server = server
        self.message = message
