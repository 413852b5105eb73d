"""Immutable JSON values: what an event's JSON fields hold once it is built.

One event object is shared by the log, the reducer's state and every subscriber, so
the JSON values inside it (a call's arguments, a tool's result, usage counts, a
snapshot's state) are frozen on construction into :class:`FrozenDict` and
:class:`FrozenList` — a ``dict`` and a ``list`` to every reader (orjson, jsonschema,
``==``, ``isinstance``) that refuse changes.  Sans-I/O.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeAlias

__all__ = ["JSON", "FrozenDict", "FrozenList", "freeze"]

JSON: TypeAlias = Any


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(
        f"can't change a {type(self).__name__}: an event's JSON values are immutable (one "
        "event is shared by the log and every subscriber); copy it first, e.g. dict(value)"
    )


class FrozenDict(dict[str, Any]):
    """A JSON object inside an event: a ``dict`` to every reader (orjson encodes it,
    ``==`` compares it with plain dicts, ``isinstance(x, dict)`` holds) whose every
    changing method raises ``TypeError``.  Made by :func:`freeze`."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return FrozenDict, (dict(self),)


class FrozenList(list[Any]):
    """A JSON array inside an event: a ``list`` to every reader that refuses changes
    (see :class:`FrozenDict`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[Any]]]:
        return FrozenList, (list(self),)


def freeze(value: JSON) -> JSON:
    """``value`` with every dict and list (or tuple) in it, at any depth, a frozen copy;
    frozen values and scalars as they are."""
    kind = type(value)
    if kind is FrozenDict or kind is FrozenList:
        return value
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return FrozenList([freeze(v) for v in value])
    return value
