"""The built-in tools: :func:`calculator` (quick) and :func:`sleep` (slow), the demo's."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

import trio

from .tool import Tool, tool

__all__ = [
    "DEMO_TOOLS",
    "MAX_CALC_BITS",
    "MAX_CALC_NESTING",
    "MAX_EXPRESSION_CHARS",
    "MAX_SLEEP_SECONDS",
    "calculator",
    "sleep",
]

MAX_SLEEP_SECONDS: Final = 3600.0
"""The longest :func:`sleep` the demo tool takes: an hour is already far beyond any
demo; a model asking for more has misread the task."""

MAX_EXPRESSION_CHARS: Final = 1000
"""The longest expression :func:`calculator` reads; bounds the parse and the work."""

MAX_CALC_NESTING: Final = 100
"""How deeply :func:`calculator`'s expressions may nest; the evaluator recurses once per
level, so this keeps it far from Python's recursion limit."""

MAX_CALC_BITS: Final = 1024
"""The largest integer (in bits) :func:`calculator` computes with: a float cannot hold
more (``2.0**1024`` overflows), and the check, made *before* an operation, is what
stops ``9**9**9`` from taking the process's memory and time."""

_JSON_INT_BITS: Final = 63
"""Integers wider than a signed 64-bit one cannot travel as JSON (orjson refuses them);
:func:`calculator` gives those results as floats, as a pocket calculator would."""


@tool(
    schema={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECONDS}},
        "required": ["seconds"],
        "additionalProperties": False,
    }
)
async def sleep(seconds: float) -> dict[str, float]:
    """Wait for the given number of seconds (0 to 3600), then return.

    A slow tool, to watch interrupts and timeouts at work.
    """
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise ValueError(f"seconds must be between 0 and {MAX_SLEEP_SECONDS:g}, got {seconds!r}")
    await trio.sleep(seconds)
    return {"slept": seconds}


_BINARY: Final[Mapping[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: Final[Mapping[type[ast.unaryop], Callable[[Any], Any]]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_SYMBOLS: Final[Mapping[type[ast.AST], str]] = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.Invert: "~",
    ast.Not: "not",
}


_TIMES: Final = "\N{MULTIPLICATION SIGN}"
_DIVIDE: Final = "\N{DIVISION SIGN}"


class _CalcError(ValueError):
    pass


def _bits(value: int | float) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_int(value: int | float) -> int | float:
    if isinstance(value, int) and value.bit_length() > MAX_CALC_BITS:
        raise _CalcError(f"the result is too large (over {MAX_CALC_BITS} bits)")
    return value


def _binary(op: type[ast.operator], left: int | float, right: int | float) -> int | float:
    # Bound integer work before doing it: the product's size is the sum of the sizes,
    # a power's is the base's size times the exponent.
    if op is ast.Mult and _bits(left) + _bits(right) > MAX_CALC_BITS + 1:
        raise _CalcError(f"the result is too large (over {MAX_CALC_BITS} bits)")
    if (
        op is ast.Pow
        and isinstance(left, int)
        and isinstance(right, int)
        and abs(left) > 1
        and right > 0
        and (abs(left).bit_length() - 1) * right > MAX_CALC_BITS
    ):
        raise _CalcError(f"the result is too large (over {MAX_CALC_BITS} bits)")
    try:
        value = _BINARY[op](left, right)
    except ZeroDivisionError:
        raise _CalcError("division by zero") from None
    except OverflowError:
        raise _CalcError("the result is too large") from None
    if isinstance(value, complex):
        raise _CalcError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _CalcError("the result is too large")
    return _check_int(value)


def _evaluate(node: ast.AST, depth: int) -> int | float:
    if depth > MAX_CALC_NESTING:
        raise _CalcError(f"the expression nests more than {MAX_CALC_NESTING} levels deep")
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _CalcError(f"{value!r} is not a number")
        return _check_int(value)
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op not in _BINARY:
            raise _CalcError(f"the operator {_SYMBOLS.get(op, op.__name__)} is not supported")
        left = _evaluate(node.left, depth + 1)
        right = _evaluate(node.right, depth + 1)
        return _binary(op, left, right)
    if isinstance(node, ast.UnaryOp):
        uop = type(node.op)
        if uop not in _UNARY:
            raise _CalcError(f"the operator {_SYMBOLS.get(uop, uop.__name__)} is not supported")
        return _UNARY[uop](_evaluate(node.operand, depth + 1))  # type: ignore[no-any-return]
    raise _CalcError(f"{type(node).__name__} is not allowed: only numbers, + - * / ** and ()")


@tool
async def calculator(expression: str) -> int | float:
    """Evaluate an arithmetic expression: numbers, + - * / ** and parentheses
    (\N{MULTIPLICATION SIGN} and \N{DIVISION SIGN} work too).

    Integers stay exact; integer results too wide for JSON come back as floats.
    """
    # Async (it never blocks): a sync tool would pay a worker-thread round trip.
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(
            f"the expression is {len(expression)} characters long; the limit is "
            f"{MAX_EXPRESSION_CHARS}"
        )
    text = expression.replace(_TIMES, "*").replace(_DIVIDE, "/").strip()
    if not text:
        raise ValueError("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"can't parse {expression!r}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ValueError(f"can't parse {expression!r}") from None
    try:
        value = _evaluate(tree, 0)
    except _CalcError as exc:
        raise ValueError(f"can't evaluate {expression!r}: {exc}") from None
    if isinstance(value, int) and value.bit_length() > _JSON_INT_BITS:
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"can't evaluate {expression!r}: the result is too large") from None
    return value


DEMO_TOOLS: Final[tuple[Tool, ...]] = (calculator, sleep)
"""The demo's tools: a quick one and a slow one."""
