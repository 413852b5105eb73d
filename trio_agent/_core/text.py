"""``Text``: an immutable string that appends in amortized O(1).

The assistant's text, a tool call's streamed arguments and its reasoning grow by one
small fragment at a time — per token, per delta.  Built as ``str + str`` each time,
a run of n fragments costs O(n²); a :class:`Text` costs O(n) and reads as a ``str``
(``str(text)``, ``==``, ``hash``).  Sans-I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["EMPTY", "Text"]

_tuple_new = tuple.__new__


class Text(tuple):  # type: ignore[type-arg]
    """An immutable string value that appends in amortized O(1).

    Successive values share one append-only list of parts; a value owns the first
    ``n`` parts.  Appending to the newest value extends the list in place; appending to
    an older value (a branch: rare, replays in tests) copies its parts first.  So the
    value semantics are those of ``str``, and a linear history costs O(total length).
    A tuple ``(parts, n)`` underneath: the token path makes one per token.
    """

    __slots__ = ()

    def __new__(cls, parts: list[str] | None = None, n: int = 0) -> Text:
        return _tuple_new(cls, ([] if parts is None else parts, n))

    def append(self, text: str) -> Text:
        parts, n = self
        if n == 0:
            parts = []  # never grow the shared empty value's list
        elif len(parts) != n:
            parts = parts[:n]
        parts.append(text)
        return _tuple_new(Text, (parts, n + 1))

    def extend(self, texts: Iterable[str]) -> Text:
        """``append`` of each of ``texts`` in turn, in one step."""
        parts, n = self
        if n == 0:
            parts = []
        elif len(parts) != n:
            parts = parts[:n]
        parts.extend(texts)
        return _tuple_new(Text, (parts, len(parts)))

    def tail(self, k: int) -> str:
        """The last ``k`` appended parts, joined (``k`` at most the parts appended)."""
        parts, n = self
        return "".join(parts[n - k : n]) if k else ""

    def __len__(self) -> int:
        """The length of the text (not of the tuple underneath)."""
        parts, n = self
        return sum(map(len, parts[:n])) if n != len(parts) else sum(map(len, parts))

    def __bool__(self) -> bool:
        return self[1] > 0 and any(self[0][: self[1]])

    def __str__(self) -> str:
        parts, n = self
        if n == len(parts):
            return "".join(parts)
        return "".join(parts[:n])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Text):
            return str(self) == str(other)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"Text({str(self)!r})"


EMPTY: Final = Text()
"""The empty text (shared: appending to it makes a new list)."""
