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
    unless ``overrides`` (tool name -> :data:`Approval`) says otherwise.

    The names in ``overrides`` must be tools of ``registry`` (a typo is an error, not
    a tool that quietly runs unasked).  A runtime whose tools change while it runs (an
    MCP server that re-lists them) gives the policy its new registry with
    :meth:`update`: the overrides stay, by name, and apply to whichever tool has that
    name now."""

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
        self._overrides: dict[str, Approval] = overrides
        self._rules: dict[str, Approval] = {}
        self.update(registry)

    def update(self, registry: ToolRegistry) -> None:
        """The runtime's tools are now ``registry`` (the overrides stay)."""
        self._rules = {t.name: t.approval for t in registry}
        self._rules.update(self._overrides)

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
