"""Running one tool call: :func:`execute_tool` and the :class:`ToolOutcome` it returns.

It validates the arguments against the schema, then runs the tool under the runtime's
``CapacityLimiter`` and a timeout, and says how it went.  Every failure of the *tool*
(bad arguments, an exception, a timeout, a result that is not JSON) becomes an outcome
the model can read; ``trio.Cancelled`` is never caught — the agent loop reports a
cancelled call itself.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs
import jsonschema
import jsonschema.exceptions
import orjson
import trio

from .context import QuietContext, ToolCallContext
from .registry import ToolRegistry
from .tool import Tool

__all__ = ["GROUP_SHOWN", "MAX_RESULT_BYTES", "ToolOutcome", "execute_tool"]

MAX_RESULT_BYTES: Final = 1_000_000
"""The largest result (as JSON) a tool may return.  The result goes into the event log,
to every subscriber and back into the model's context; a tool that returns a whole file
by mistake gets an error it can act on instead."""

GROUP_SHOWN: Final = 3
"""Errors of an exception group a tool raises (its own tasks failing) that its result
names, the first ones: what failed, for the model, in a bounded message."""


Status = Literal["ok", "error", "timeout"]


@attrs.frozen(slots=True)
class ToolOutcome:
    """How a tool call ended: ``ok`` with a JSON ``result``, or ``error``/``timeout``
    with an ``error`` message (written for the model to read)."""

    status: Status
    result: Any = None
    error: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.status not in ("ok", "error", "timeout"):
            raise ValueError(f"unknown tool outcome status {self.status!r}")
        if (self.status == "ok") != (self.error is None):
            needs = "takes no" if self.status == "ok" else "needs an"
            raise ValueError(f"a {self.status!r} tool outcome {needs} error")

    @classmethod
    def failed(cls, error: str, status: Status = "error") -> ToolOutcome:
        return cls(status, None, error)


def _validation_message(name: str, error: jsonschema.exceptions.ValidationError) -> str:
    return f"invalid arguments for tool {name!r} at {error.json_path}: {error.message}"


async def execute_tool(
    registry: ToolRegistry,
    name: str,
    arguments: Mapping[str, Any],
    *,
    limiter: trio.CapacityLimiter,
    timeout: float,
    context: ToolCallContext | None = None,
) -> ToolOutcome:
    """Run one tool call and say how it went.

    Unknown tools and arguments that don't match the schema end as ``error`` before the
    tool runs.  The tool runs holding a token of ``limiter`` and within
    ``tool.timeout or timeout`` seconds (waiting for the token does not count); a sync
    tool runs in a worker thread that is abandoned if the call is cancelled or times out
    (it carries on in the background; its result is dropped).  A tool that
    ``takes_context`` gets ``context`` (a :class:`QuietContext` when none is given).
    ``trio.Cancelled`` propagates.
    """
    tool_ = registry.get(name)
    if tool_ is None:
        known = ", ".join(repr(n) for n in registry.names()) or "none"
        return ToolOutcome.failed(f"unknown tool {name!r}; known tools: {known}")
    plain = dict(arguments)
    if not tool_.validator.is_valid(plain):  # (the error is worked out only when there is one)
        error = jsonschema.exceptions.best_match(tool_.validator.iter_errors(plain))
        assert error is not None
        return ToolOutcome.failed(_validation_message(name, error))
    seconds = tool_.timeout or timeout
    try:
        limiter.acquire_nowait()  # a token is free: no scheduler round trip
    except trio.WouldBlock:
        await limiter.acquire()
    try:
        return await _run(tool_, name, arguments, seconds, context)
    finally:
        limiter.release()


async def _run(
    tool_: Tool,
    name: str,
    arguments: Mapping[str, Any],
    seconds: float,
    context: ToolCallContext | None,
) -> ToolOutcome:
    """Run the tool (holding a token) within ``seconds``; its outcome."""
    # A scope with a deadline rather than ``fail_after`` (a generator-based context
    # manager that costs about as much again on every call).  The ``try`` is outside it,
    # so that what a tool raises as the deadline cancels it (an exception group with the
    # ``Cancelled`` of its own tasks) reaches it with the ``Cancelled`` taken out.
    result: Any = None
    try:
        with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
            if tool_.takes_context:
                result = await tool_.fn(dict(arguments), context or QuietContext())
                if isinstance(result, ToolOutcome):
                    if result.status != "ok":
                        return result
                    result = result.result
            elif tool_.is_async:
                result = await tool_.fn(**arguments)
            else:
                call = functools.partial(tool_.fn, **arguments)
                result = await trio.to_thread.run_sync(call, abandon_on_cancel=True)
    except Exception as exc:
        return ToolOutcome.failed(_describe(exc))
    if scope.cancelled_caught:
        return ToolOutcome.failed(f"tool {name!r} timed out after {seconds:g} seconds", "timeout")
    try:
        encoded = orjson.dumps(result)
    except TypeError as exc:
        return ToolOutcome.failed(f"tool {name!r} returned a value that is not JSON: {exc}")
    if len(encoded) > MAX_RESULT_BYTES:
        return ToolOutcome.failed(
            f"tool {name!r} returned {len(encoded)} bytes of JSON; the limit is "
            f"{MAX_RESULT_BYTES} (MAX_RESULT_BYTES)"
        )
    # A plain JSON value (tuples become lists, …) so the log replays to the same thing.
    return ToolOutcome("ok", orjson.loads(encoded))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):  # (its own tasks: say what they raised)
        shown = [_describe(e) for e in exc.exceptions[:GROUP_SHOWN]]
        more = len(exc.exceptions) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more else "")
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
