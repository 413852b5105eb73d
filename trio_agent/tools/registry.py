"""``ToolRegistry``: the tools of a runtime, by name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from .._core.model import ToolSpec
from .tool import Tool

__all__ = ["ToolRegistry"]


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
