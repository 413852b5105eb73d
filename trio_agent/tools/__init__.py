"""Tools: functions a model may call.

- :func:`tool` turns an async or sync function into a :class:`Tool` (the JSON schema of
  its arguments from the signature, the description from the docstring);
- :class:`ToolRegistry` holds the tools of a runtime by name;
- :class:`ApprovalPolicy` says which calls wait for a person's approval (each tool's
  ``approval``, overridden per runtime);
- :func:`execute_tool` runs one call under a limiter and a timeout and says how it went
  as a :class:`ToolOutcome`; a tool that ``takes_context`` gets its call's
  :class:`ToolCallContext` (progress, notices);
- :class:`McpServer` (in :mod:`trio_agent.tools.mcp`): the tools of an MCP server;
- the built-in tools :func:`calculator` and :func:`sleep` (:data:`DEMO_TOOLS`).
"""

from .approval import Approval, ApprovalPolicy
from .builtin import (
    DEMO_TOOLS,
    MAX_CALC_BITS,
    MAX_CALC_NESTING,
    MAX_EXPRESSION_CHARS,
    MAX_SLEEP_SECONDS,
    calculator,
    sleep,
)
from .context import QuietContext, ToolCallContext
from .execute import MAX_RESULT_BYTES, ToolOutcome, execute_tool
from .mcp import McpServer
from .registry import ToolRegistry
from .tool import TOOL_NAME_PATTERN, Tool, schema_of, tool

__all__ = [
    "DEMO_TOOLS",
    "MAX_CALC_BITS",
    "MAX_CALC_NESTING",
    "MAX_EXPRESSION_CHARS",
    "MAX_RESULT_BYTES",
    "MAX_SLEEP_SECONDS",
    "TOOL_NAME_PATTERN",
    "Approval",
    "ApprovalPolicy",
    "McpServer",
    "QuietContext",
    "Tool",
    "ToolCallContext",
    "ToolOutcome",
    "ToolRegistry",
    "calculator",
    "execute_tool",
    "schema_of",
    "sleep",
    "tool",
]
