"""``@tool``: a function a model may call, with its JSON schema.

:func:`tool` turns an async or sync function into a :class:`Tool`, deriving the JSON
schema of its arguments from the signature and the description from the docstring;
:func:`schema_of` is that derivation on its own.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, overload

import attrs
import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import orjson

from .._core.model import ToolSpec
from .approval import Approval, check_approval

__all__ = ["TOOL_NAME_PATTERN", "Tool", "schema_of", "tool"]

TOOL_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What a tool name may be: the providers' common rule (OpenAI and Anthropic both refuse
anything else), checked when the tool is made rather than on the first request."""

_DRAFT: Final = jsonschema.Draft202012Validator


@attrs.frozen(slots=True)
class Tool:
    """A function a model may call.

    ``parameters`` is the JSON schema (Draft 2020-12) of its keyword arguments;
    ``is_async`` says whether ``fn`` is a coroutine function (a sync ``fn`` runs in a
    worker thread); ``timeout`` (seconds), when set, replaces the runtime's default;
    ``approval`` says whether a call waits for a person's approval before it runs
    (``True``, or a predicate on the call's arguments, decided per call: see
    :mod:`trio_agent.tools.approval`).  Calling the tool calls ``fn``.

    ``takes_context``: ``fn`` is async and awaited as ``fn(arguments, context)`` — the
    arguments as one dict, and the call's
    :class:`~trio_agent.tools.context.ToolCallContext` (its id, progress, notices) —
    and returns a :class:`~trio_agent.tools.execute.ToolOutcome` (or a JSON result).
    A tool whose call is a request to another process (an MCP server's) is one.

    ``parameters`` is checked against the JSON Schema draft it names in ``$schema``
    (2020-12 when it names none), and the arguments of each call are validated with it.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    fn: Callable[..., Any]
    is_async: bool
    timeout: float | None = None
    approval: Approval = attrs.field(default=False, validator=check_approval)
    takes_context: bool = False
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
        if self.takes_context and not self.is_async:
            raise ValueError(f"tool {self.name!r}: a tool that takes its context is async")
        if not isinstance(self.parameters, Mapping):
            raise ValueError(
                f"tool {self.name!r}: parameters must be a JSON schema object, "
                f"got {type(self.parameters).__name__}"
            )
        try:
            draft = jsonschema.validators.validator_for(self.parameters, default=_DRAFT)
            draft.check_schema(dict(self.parameters))
        except jsonschema.exceptions.SchemaError as exc:
            raise ValueError(
                f"tool {self.name!r}: parameters are not a valid JSON schema: {exc.message}"
            ) from None
        object.__setattr__(self, "validator", draft(self.parameters))

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
    approval: Approval = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    approval: Approval = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a function: ``@tool`` or ``@tool(name=…, …)``.

    The name defaults to the function's, the description to the first paragraph of its
    docstring, the schema to one derived from the signature: ``str``, ``int``,
    ``float``, ``bool``, ``list[X]``, ``dict``/``dict[str, X]``, ``X | None``,
    ``Literal[…]``; a parameter with a default is not required; no other property is
    allowed.  Anything else raises ``TypeError`` here, naming the parameter.
    ``approval=True`` (or a predicate on the arguments) makes each call wait for a
    person's approval (DESIGN §9).
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
            approval=approval,
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
