"""Events: every fact of a session, as immutable values with a JSON wire form.

The event types of the design contract (DESIGN §2) and their codec; defined in
:mod:`trio_agent._core.events` (the sans-I/O core), offered here.  ``event.to_wire()``
is one JSON object; :func:`from_wire` decodes one and raises
:class:`~trio_agent.errors.ProtocolError` naming what was wrong.
"""

from ._core.events import (
    DONE_STATUSES,
    EVENT_TYPES,
    TOOL_STATUSES,
    Done,
    Error,
    Event,
    Interrupt,
    Interrupted,
    ModelFinished,
    Reasoning,
    Resume,
    RunStarted,
    StateSnapshot,
    Thinking,
    TokenStream,
    ToolApproval,
    ToolApprovalRequested,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolProgress,
    ToolResult,
    UserInput,
    from_dict,
    from_wire,
    loads,
)
from ._core.frozen import FrozenDict, FrozenList, freeze
from .errors import ProtocolError

__all__ = [
    "DONE_STATUSES",
    "EVENT_TYPES",
    "TOOL_STATUSES",
    "Done",
    "Error",
    "Event",
    "FrozenDict",
    "FrozenList",
    "Interrupt",
    "Interrupted",
    "ModelFinished",
    "ProtocolError",
    "Reasoning",
    "Resume",
    "RunStarted",
    "StateSnapshot",
    "Thinking",
    "TokenStream",
    "ToolApproval",
    "ToolApprovalRequested",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolProgress",
    "ToolResult",
    "UserInput",
    "freeze",
    "from_dict",
    "from_wire",
    "loads",
]
