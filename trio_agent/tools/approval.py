"""Which tool calls wait for a person's approval before they run (DESIGN §9).

A tool says it with ``@tool(approval=True)`` (every call) or ``approval=predicate``
(decided per call on its arguments, e.g. "only for paths outside the workspace"); a
runtime overrides it per tool name (``open_runtime(approval={"sleep": True})``,
``--approve sleep``).  :class:`ApprovalPolicy` is the decision, made when a call's
arguments are complete.  A predicate that raises is taken as "needs approval" (and
logged): when in doubt, a person decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from .registry import ToolRegistry

__all__ = ["Approval", "ApprovalPolicy", "check_approval"]

logger = logging.getLogger("trio_agent")

Approval: TypeAlias = bool | Callable[[Mapping[str, Any]], bool]
"""Whether a tool's calls need approval: always (``True``), never (``False``), or as a
predicate on the call's arguments says."""


def check_approval(_: object, attribute: Any, value: object) -> None:
    """An :data:`Approval` is a bool or a callable (a clear error otherwise)."""
    if not (isinstance(value, bool) or callable(value)):
        raise TypeError(
            f"approval must be True, False or a predicate on the arguments, "
            f"got {type(value).__name__}"
        )


class ApprovalPolicy:
    """Which calls of a runtime's tools need approval: each tool's own ``approval``,
    unless ``overrides`` (tool name -> :data:`Approval`) says otherwise."""

    def __init__(
        self, registry: ToolRegistry, overrides: Mapping[str, Approval] | None = None
    ) -> None:
        overrides = dict(overrides or {})
        for name, value in overrides.items():
            check_approval(None, None, value)
            if name not in registry:
                known = ", ".join(repr(n) for n in registry.names()) or "none"
                raise ValueError(
                    f"approval names the tool {name!r}, which the runtime does not have; "
                    f"its tools: {known}"
                )
        self._rules: dict[str, Approval] = {t.name: t.approval for t in registry}
        self._rules.update(overrides)

    def needs(self, name: str, arguments: Mapping[str, Any]) -> bool:
        """Whether the call of ``name`` with ``arguments`` waits for approval."""
        rule = self._rules.get(name, False)
        if isinstance(rule, bool):
            return rule
        try:
            return bool(rule(arguments))
        except Exception:
            logger.exception("the approval predicate of tool %r failed: approval needed", name)
            return True

    @property
    def any(self) -> bool:
        """Some call may need approval."""
        return any(rule is not False for rule in self._rules.values())
