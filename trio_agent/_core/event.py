"""``Event``: the fields every event carries, their checks, and the wire form.

Each event type (see :mod:`trio_agent._core.events`) is an ``@attrs.frozen(slots=True)``
class registered with :func:`event_type` under its wire ``type`` with its field checks.
Events are validated on construction by one generated expression per class (see
:func:`compile_check`); a wrong type or an unknown choice raises
:class:`~trio_agent.errors.ProtocolError` naming the field and what was expected, so a
bad event can never enter a log.  The JSON values an event carries are frozen (see
:mod:`trio_agent._core.frozen`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Final, Self, TypeAlias

import attrs
import orjson

from ..errors import ProtocolError
from .frozen import JSON, FrozenDict, FrozenList, freeze

__all__ = [
    "ANY_JSON",
    "BASE_CHECKS",
    "EVENT_TYPES",
    "MODES",
    "OPT_STR",
    "STR",
    "Check",
    "Event",
    "compile_check",
    "compile_init",
    "compile_to_dict",
    "describe",
    "event_type",
    "json_type",
]


TYPE_NAMES: Final = {
    str: "str",
    int: "int",
    float: "number",
    bool: "bool",
    dict: "object",
    list: "array",
}

# A field check: (name, accepted types, may be None, allowed values or None)
Check: TypeAlias = tuple[str, tuple[type, ...], bool, frozenset[str] | None]


def describe(types: tuple[type, ...], optional: bool, choices: frozenset[str] | None) -> str:
    if choices is not None:
        text = " or ".join(repr(c) for c in sorted(choices))
    elif types == ():
        text = "any JSON value"
    else:
        text = " or ".join(
            TYPE_NAMES.get(t, t.__name__) for t in types if t is not int or float not in types
        )
    return text + (" or null" if optional else "")


def json_type(value: object) -> str:
    if value is None:
        return "null"
    return TYPE_NAMES.get(type(value), type(value).__name__)


@attrs.frozen(slots=True, kw_only=True)
class Event:
    """Fields every event carries.

    ``session``, ``seq`` and ``ts`` are stamped by the bus that publishes it; ``run`` counts
    from 1 in each session and ``step`` from 1 in each run (0 where not in one).
    """

    type: ClassVar[str] = ""
    field_checks: ClassVar[tuple[Check, ...]] = ()
    field_names: ClassVar[tuple[str, ...]] = ()
    new: ClassVar[Callable[..., Any]]
    """``cls.new(session, run, step, seq, ts, *fields)``: the event built from every
    field by position, in :attr:`field_names` order, with the same checks as the
    keyword constructor (see :func:`compile_init`): how the bus builds what it stamps."""

    session: str = ""
    run: int = 0
    step: int = 0
    seq: int = 0
    ts: float = 0.0

    def __attrs_post_init__(self) -> None:
        # One generated check per class (see ``compile_check``), not one validator
        # per field: events are built on the token hot path.  Only when it fails does
        # the generic loop run, to say which field is wrong and why.
        if not self._fast_check():
            self._check()

    def _fast_check(self) -> bool:  # replaced per class by ``compile_check``
        return False

    def _check(self) -> None:
        """Raise :class:`ProtocolError` naming the first field that is wrong."""
        for name, types, optional, choices in self.field_checks:
            value = getattr(self, name)
            if value is None:
                if optional:
                    continue
            elif (
                types == ()
                or (isinstance(value, types) and (type(value) is not bool or bool in types))
            ) and (choices is None or value in choices):
                continue
            raise ProtocolError(
                f"field {name!r} of {self.type!r} event: expected "
                f"{describe(types, optional, choices)}, got "
                + (
                    repr(value)
                    if choices is not None and isinstance(value, str)
                    else json_type(value)
                )
            )
        ts = self.ts
        if not math.isfinite(ts):  # JSON has no NaN or infinity
            raise ProtocolError(
                f"field 'ts' of {self.type!r} event: expected a finite number, got {ts!r}"
            )

    def check_json(self, name: str) -> None:
        """Field ``name`` must be a JSON value (orjson encodes it): caught here, not
        when the event is first sent or folded."""
        try:
            orjson.dumps(getattr(self, name))
        except orjson.JSONEncodeError as exc:
            raise ProtocolError(
                f"field {name!r} of {self.type!r} event: expected a JSON value, {exc}"
            ) from None

    def freeze_field(self, name: str) -> None:
        value = getattr(self, name)
        frozen = freeze(value)
        if frozen is not value:
            object.__setattr__(self, name, frozen)

    def stamped(self, session: str, seq: int, ts: float) -> Self:
        """A copy of this event with the session, ``seq`` and time set: what publishing
        an unstamped event does (``EventBus.publish``)."""
        return attrs.evolve(self, session=session, seq=seq, ts=ts)

    def to_dict(self) -> dict[str, JSON]:
        """The wire form as a plain dict (``type`` first)."""
        out: dict[str, JSON] = {"type": self.type}
        for name in self.field_names:
            out[name] = getattr(self, name)
        return out

    def to_wire(self) -> bytes:
        """The wire form: one JSON object, UTF-8."""
        return orjson.dumps(self.to_dict())


BASE_CHECKS: Final[tuple[Check, ...]] = (
    ("session", (str,), False, None),
    ("run", (int,), False, None),
    ("step", (int,), False, None),
    ("seq", (int,), False, None),
    ("ts", (float, int), False, None),
)

EVENT_TYPES: dict[str, type[Event]] = {}


_FROZEN: Final[dict[type, type]] = {dict: FrozenDict, list: FrozenList}


def _condition(checks: tuple[Check, ...], read: str, env: dict[str, object]) -> str:
    """The boolean expression that says whether values pass ``checks`` (and ``ts`` is
    finite), over exact types; ``read`` is how a field's value is read (``"self.{}"``
    for an event's slot, ``"{}"`` for an argument), and the types and choices it names
    go into ``env``."""
    terms = []
    for i, (name, types, optional, choices) in enumerate(checks):
        if not types:
            continue
        value = read.format(name)
        alternatives = []
        # (a frozen copy passes as what it was: an evolved event holds one)
        kinds = types + tuple(_FROZEN[t] for t in types if t in _FROZEN)
        for j, kind in enumerate(kinds):
            env[f"_t{i}_{j}"] = kind
            alternatives.append(f"type({value}) is _t{i}_{j}")
        term = " or ".join(alternatives)
        if optional:
            term = f"{value} is None or {term}"
        if choices is not None:
            env[f"_c{i}"] = choices
            term = f"({term}) and {value} in _c{i}"
        terms.append(f"({term})")
    ts = read.format("ts")
    terms.append(f"{ts} - {ts} == 0")  # false for NaN and infinities
    return " and ".join(terms)


def compile_check(checks: tuple[Check, ...]) -> Callable[[Event], bool]:
    """A function that says whether an event passes ``checks`` (and has a finite
    ``ts``), as one boolean expression over exact types: ``_fast_check``, which a class
    with checks of its own runs first in its ``__attrs_post_init__`` (a class without
    has the same expression inlined in its ``__init__``, see :func:`compile_init`).

    Generated, as attrs generates ``__init__``: a loop over the checks costs about three
    times as much, and this runs once per event built.  Exact types are stricter than
    the ``isinstance`` of :meth:`Event._check`; a value that fails here (a subclass, say)
    is judged there.
    """
    env: dict[str, object] = {}
    condition = _condition(checks, "self.{}", env)
    source = f"def fast_check(self):\n    return {condition}\n"
    exec(compile(source, "<trio_agent.events check>", "exec"), env)
    return env["fast_check"]  # type: ignore[return-value]


def compile_init(
    cls: type[Event],
) -> tuple[Callable[..., None], Callable[..., Any], Callable[..., Any]]:
    """The same ``__init__`` as attrs generates for ``cls`` (keyword-only, the same
    defaults, then the checks); ``new``: the same construction with every field given
    by position, in :attr:`Event.field_names` order — no keyword parsing, for the bus,
    which builds the events it stamps on the token hot path; and ``stamped`` through
    ``new`` (no ``attrs.evolve``: it reads every field by name, then parses keywords).

    Both set each slot through its own descriptor: a frozen class's generated
    ``__init__`` goes through ``object.__setattr__`` once per field, and that is half of
    what building an event costs.  A class with no ``__attrs_post_init__`` of its own
    checks the arguments in the same function (the expression of
    :func:`compile_check`, over the arguments instead of the slots); one with its own
    calls it.  An event's fields are plain keyword fields with defaults or factories: a
    field with a converter, a validator, a factory that takes ``self``, or not in
    ``__init__`` is refused (``TypeError``) when the class is registered."""
    fields = attrs.fields(cls)
    for f in fields:
        if (
            f.converter is not None
            or f.validator is not None
            or not f.init
            or not f.kw_only
            or (isinstance(f.default, attrs.Factory) and f.default.takes_self)  # type: ignore[arg-type]
        ):
            raise TypeError(
                f"event field {cls.__name__}.{f.name}: an event field is a keyword field "
                "with a default or a factory, no converter, validator or takes_self "
                "(checks go in event_type's, or in __attrs_post_init__)"
            )
    env: dict[str, object] = {
        "_post": cls.__attrs_post_init__,
        "_new": object.__new__,
        "_cls": cls,
        "_NOTHING": attrs.NOTHING,
    }
    params: list[str] = []
    init_body: list[str] = []  # (the factory defaults: ``new`` takes every field)
    body: list[str] = []
    for i, f in enumerate(fields):
        slot = next(k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__)
        env[f"_s{i}"] = slot.__set__
        if f.default is attrs.NOTHING:
            params.append(f.name)
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            env[f"_f{i}"] = f.default.factory
            params.append(f"{f.name}=_NOTHING")
            init_body.append(f"    if {f.name} is _NOTHING:\n        {f.name} = _f{i}()")
        else:
            env[f"_d{i}"] = f.default
            params.append(f"{f.name}=_d{i}")
        body.append(f"    _s{i}(self, {f.name})")
    if cls.__attrs_post_init__ is Event.__attrs_post_init__:  # (inline, on the arguments)
        body.append(f"    if not ({_condition(cls.field_checks, '{}', env)}):")
        body.append("        self._check()")
    else:
        body.append("    _post(self)")
    names = ", ".join(f.name for f in fields)
    copied = ", ".join(
        f.name if f.name in ("session", "seq", "ts") else f"self.{f.name}" for f in fields
    )
    source = "\n".join(
        [
            f"def __init__(self, *, {', '.join(params)}):",
            *init_body,
            *body,
            f"def new({names}):",
            "    self = _new(_cls)",
            *body,
            "    return self",
            "def stamped(self, session, seq, ts):",
            f"    return new({copied})",
            "",
        ]
    )
    exec(compile(source, f"<trio_agent.events {cls.__name__}.__init__>", "exec"), env)
    init: Callable[..., None] = env["__init__"]  # type: ignore[assignment]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    new: Callable[..., Any] = env["new"]  # type: ignore[assignment]
    new.__qualname__ = f"{cls.__qualname__}.new"
    stamped: Callable[..., Any] = env["stamped"]  # type: ignore[assignment]
    stamped.__qualname__ = f"{cls.__qualname__}.stamped"
    stamped.__doc__ = Event.stamped.__doc__
    return init, new, stamped


def compile_to_dict(cls: type[Event]) -> Callable[[Event], dict[str, JSON]]:
    """``to_dict`` for ``cls`` as one dict display over its slots (a loop of
    ``getattr`` costs about three times as much; every event sent to every client is
    made a dict)."""
    items = ", ".join(f"{name!r}: self.{name}" for name in cls.field_names)
    env: dict[str, object] = {}
    source = f"def to_dict(self):\n    return {{'type': {cls.type!r}, {items}}}\n"
    exec(compile(source, f"<trio_agent.events {cls.__name__}.to_dict>", "exec"), env)
    to_dict: Callable[[Event], dict[str, JSON]] = env["to_dict"]  # type: ignore[assignment]
    to_dict.__qualname__ = f"{cls.__qualname__}.to_dict"
    to_dict.__doc__ = Event.to_dict.__doc__
    return to_dict


def event_type(
    type_name: str, **checks: tuple[tuple[type, ...], bool, frozenset[str] | None]
) -> Any:
    """Register an event class under its wire ``type`` with its field checks."""

    def register(cls: type[Event]) -> type[Event]:
        cls.type = type_name
        cls.field_checks = BASE_CHECKS + tuple((n, *spec) for n, spec in checks.items())
        cls.field_names = tuple(a.name for a in attrs.fields(cls))
        init, new, stamped = compile_init(cls)
        cls.__init__ = init  # type: ignore[method-assign]
        cls.new = staticmethod(new)
        cls.stamped = stamped  # type: ignore[method-assign]
        cls.to_dict = compile_to_dict(cls)  # type: ignore[method-assign,assignment]
        cls._fast_check = compile_check(cls.field_checks)  # type: ignore[method-assign,assignment]
        EVENT_TYPES[type_name] = cls
        return cls

    return register


STR: Final = ((str,), False, None)
OPT_STR: Final = ((str,), True, None)
ANY_JSON: Final = ((), True, None)
MODES: Final = ((str,), False, frozenset({"soft", "hard"}))
