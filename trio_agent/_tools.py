"""Tools: functions a model may call.

- :func:`tool` turns an async or sync function into a :class:`Tool`, deriving the JSON
  schema of its arguments from the signature and the description from the docstring.
- :class:`ToolRegistry` holds the tools of a runtime by name.
- :func:`execute_tool` runs one call: it validates the arguments against the schema,
  then runs the tool under the runtime's ``CapacityLimiter`` and a timeout, and says how
  it went as a :class:`ToolOutcome`.  Every failure of the *tool* (bad arguments, an
  exception, a timeout, a result that is not JSON) becomes an outcome the model can read;
  ``trio.Cancelled`` is never caught — the agent loop reports a cancelled call itself.
- :data:`DEMO_TOOLS`: :func:`calculator` and :func:`sleep`.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Literal, overload

import attrs
import jsonschema
import jsonschema.exceptions
import orjson
import trio

from .models._base import ToolSpec

__all__ = [
    "DEMO_TOOLS",
    "MAX_CALC_BITS",
    "MAX_CALC_NESTING",
    "MAX_EXPRESSION_CHARS",
    "MAX_RESULT_BYTES",
    "MAX_SLEEP_SECONDS",
    "TOOL_NAME_PATTERN",
    "Tool",
    "ToolOutcome",
    "ToolRegistry",
    "calculator",
    "execute_tool",
    "sleep",
    "tool",
]

TOOL_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What a tool name may be: the providers' common rule (OpenAI and Anthropic both refuse
anything else), checked when the tool is made rather than on the first request."""

MAX_RESULT_BYTES: Final = 1_000_000
"""The largest result (as JSON) a tool may return.  The result goes into the event log,
to every subscriber and back into the model's context; a tool that returns a whole file
by mistake gets an error it can act on instead."""

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

_DRAFT: Final = jsonschema.Draft202012Validator

Status = Literal["ok", "error", "timeout"]


# ---- the Tool value and the decorator --------------------------------------------------


@attrs.frozen(slots=True)
class Tool:
    """A function a model may call.

    ``parameters`` is the JSON schema (Draft 2020-12) of its keyword arguments;
    ``is_async`` says whether ``fn`` is a coroutine function (a sync ``fn`` runs in a
    worker thread); ``timeout`` (seconds), when set, replaces the runtime's default.
    Calling the tool calls ``fn``.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., Any]
    is_async: bool
    timeout: float | None = None
    # Built once: a validator per call costs more than most tool calls.
    validator: jsonschema.protocols.Validator = attrs.field(
        init=False, eq=False, repr=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        if not TOOL_NAME_PATTERN.match(self.name):
            raise ValueError(
                f"tool name {self.name!r} is not allowed: use 1 to 64 letters, digits, '_' or '-'"
            )
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(
                f"tool {self.name!r}: timeout must be a positive number of seconds, "
                f"got {self.timeout!r}"
            )
        try:
            _DRAFT.check_schema(self.parameters)
        except jsonschema.exceptions.SchemaError as exc:
            raise ValueError(
                f"tool {self.name!r}: parameters are not a valid JSON schema: {exc.message}"
            ) from None
        object.__setattr__(self, "validator", _DRAFT(self.parameters))

    @property
    def spec(self) -> ToolSpec:
        """The tool as a model sees it."""
        return ToolSpec(self.name, self.description, self.parameters)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a function: ``@tool`` or ``@tool(name=…, …)``.

    The name defaults to the function's, the description to the first paragraph of its
    docstring, the schema to one derived from the signature: ``str``, ``int``,
    ``float``, ``bool``, ``list[X]``, ``dict``/``dict[str, X]``, ``X | None``,
    ``Literal[…]``; a parameter with a default is not required; no other property is
    allowed.  Anything else raises ``TypeError`` here, naming the parameter.
    """

    def make(fn: Callable[..., Any]) -> Tool:
        if isinstance(fn, Tool):
            raise TypeError(f"{fn.name!r} is already a tool")
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError(
                f"can't make a tool of {_qualname(fn)}: it is a generator function; "
                "a tool returns one result"
            )
        if not callable(fn):
            raise TypeError(f"can't make a tool of {fn!r}: it is not callable")
        parameters = dict(schema) if schema is not None else schema_of(fn)
        return Tool(
            name=name if name is not None else fn.__name__,
            description=description if description is not None else _first_paragraph(fn),
            parameters=parameters,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            timeout=timeout,
        )

    if fn is not None:
        return make(fn)
    return make


def _qualname(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _first_paragraph(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    paragraph = doc.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines()).strip()


def schema_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON schema of ``fn``'s keyword arguments, from its signature and hints."""
    where = _qualname(fn)
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"can't read the type hints of {where}: {exc}") from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"parameter {param.name!r} of {where}: *args and **kwargs can't be "
                "described to a model; name each parameter"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(
                f"parameter {param.name!r} of {where} is positional-only; a tool is "
                "called with keyword arguments"
            )
        if param.name not in hints:
            raise TypeError(f"parameter {param.name!r} of {where} has no type annotation")
        try:
            prop = _schema_of_type(hints[param.name])
        except TypeError as exc:
            raise TypeError(f"parameter {param.name!r} of {where}: {exc}") from None
        if param.default is param.empty:
            required.append(param.name)
        else:
            try:
                prop["default"] = orjson.loads(orjson.dumps(param.default))
            except TypeError:
                pass  # a default the model can't see still applies when it omits the value
        properties[param.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


_SCALARS: Final[Mapping[Any, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _schema_of_type(hint: Any) -> dict[str, Any]:
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is list or origin is list:
        if len(args) > 1:
            raise TypeError(f"unsupported annotation {hint!r}")
        return {"type": "array", "items": _schema_of_type(args[0])} if args else {"type": "array"}
    if hint is dict or origin is dict:
        if not args:
            return {"type": "object"}
        if args[0] is not str:
            raise TypeError(f"unsupported annotation {hint!r}: JSON object keys are strings")
        return {"type": "object", "additionalProperties": _schema_of_type(args[1])}
    if origin is Literal:
        if not all(isinstance(a, str | int | float | bool) or a is None for a in args):
            raise TypeError(f"unsupported annotation {hint!r}: Literal values must be JSON")
        return {"enum": list(args)}
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in args if a is not type(None)]
        schemas = [_schema_of_type(a) for a in members]
        if len(members) < len(args):
            schemas.append({"type": "null"})
        if all(set(s) == {"type"} and isinstance(s["type"], str) for s in schemas):
            return {"type": [s["type"] for s in schemas]}
        return {"anyOf": schemas}
    raise TypeError(
        f"unsupported annotation {hint!r}; use str, int, float, bool, list[...], dict, "
        "Literal[...] or X | None"
    )


# ---- the registry -------------------------------------------------------------------


class ToolRegistry:
    """The tools of a runtime, by name, in the order given."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        by_name: dict[str, Tool] = {}
        for t in tools:
            if not isinstance(t, Tool):
                raise TypeError(f"{t!r} is not a Tool; decorate the function with @trio_agent.tool")
            if t.name in by_name:
                raise ValueError(
                    f"two tools are named {t.name!r}; give one another name with @tool(name=...)"
                )
            by_name[t.name] = t
        self._tools: Mapping[str, Tool] = by_name
        self._specs = tuple(t.spec for t in by_name.values())

    def get(self, name: str) -> Tool | None:
        """The tool named ``name``, or ``None``."""
        return self._tools.get(name)

    def specs(self) -> tuple[ToolSpec, ...]:
        """The tools as a model sees them."""
        return self._specs

    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


# ---- running a call -----------------------------------------------------------------


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
) -> ToolOutcome:
    """Run one tool call and say how it went.

    Unknown tools and arguments that don't match the schema end as ``error`` before the
    tool runs.  The tool runs holding a token of ``limiter`` and within
    ``tool.timeout or timeout`` seconds (waiting for the token does not count); a sync
    tool runs in a worker thread that is abandoned if the call is cancelled or times out
    (it carries on in the background; its result is dropped).  ``trio.Cancelled``
    propagates.
    """
    tool_ = registry.get(name)
    if tool_ is None:
        known = ", ".join(repr(n) for n in registry.names()) or "none"
        return ToolOutcome.failed(f"unknown tool {name!r}; known tools: {known}")
    errors = tool_.validator.iter_errors(dict(arguments))
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        return ToolOutcome.failed(_validation_message(name, error))
    seconds = tool_.timeout or timeout
    async with limiter:
        try:
            with trio.fail_after(seconds) as scope:
                if tool_.is_async:
                    result = await tool_.fn(**arguments)
                else:
                    call = functools.partial(tool_.fn, **arguments)
                    result = await trio.to_thread.run_sync(call, abandon_on_cancel=True)
        except trio.TooSlowError as exc:
            if scope.cancelled_caught:
                return ToolOutcome.failed(
                    f"tool {name!r} timed out after {seconds:g} seconds", "timeout"
                )
            return ToolOutcome.failed(_describe(exc))
        except Exception as exc:
            return ToolOutcome.failed(_describe(exc))
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
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ---- built-in tools -----------------------------------------------------------------


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
