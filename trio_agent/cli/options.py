"""What ``run`` and ``serve`` share: the options that shape the agent (DESIGN §7).

- ``--model SPEC``, ``--base-url URL`` and ``--max-tokens N``: the model
  (:func:`add_model_arguments`, :func:`model_of`); ``demo`` takes them too;
- ``--approve NAME,…``: calls of these tools wait for a person's approval (DESIGN §9);
  on ``serve`` the page asks, on ``run`` the terminal does (:func:`add_agent_arguments`,
  :func:`approval_of`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ..tools import Approval, Tool

if TYPE_CHECKING:
    from ..models import Model

__all__ = [
    "DEFAULT_MODEL_SPEC",
    "UsageError",
    "add_agent_arguments",
    "add_model_arguments",
    "approval_of",
    "model_of",
]

DEFAULT_MODEL_SPEC: Final = "scripted"


class UsageError(Exception):
    """A command-line option that makes no sense; the message says which (exit 2)."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model SPEC``, ``--base-url URL`` and ``--max-tokens N``, for ``run``, ``serve``
    and ``demo``."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_SPEC,
        metavar="SPEC",
        help="scripted, scripted:FILE, openai:MODEL or anthropic:MODEL (default: scripted)",
    )
    parser.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="provider base URL (OpenAI-compatible: with /v1; Anthropic: the host root); "
        "default from OPENAI_BASE_URL / ANTHROPIC_BASE_URL",
    )
    parser.add_argument(
        "--max-tokens",
        type=_positive,
        default=None,
        metavar="N",
        help="cap each answer of a provider's model at N tokens (default: the server's)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def model_of(args: argparse.Namespace) -> Model:
    """The model ``--model``, ``--base-url`` and ``--max-tokens`` name; ``ValueError``
    (or ``OSError`` for a script file) saying what is wrong."""
    from ..models import from_spec

    return from_spec(
        args.model,
        base_url=getattr(args, "base_url", None),
        max_tokens=getattr(args, "max_tokens", None),
    )


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """``--approve NAME,…``, for ``run`` and ``serve``."""
    parser.add_argument(
        "--approve",
        default="",
        metavar="NAME,…",
        help="comma-separated tools whose every call waits for a person's approval "
        "(serve: on the page; run: asked on the terminal, denied when stdin is not one)",
    )


def approval_of(args: argparse.Namespace, tools: Sequence[Tool]) -> dict[str, Approval]:
    """``open_runtime(approval=…)`` from ``--approve``; :class:`UsageError` for a name
    that is not one of ``tools``."""
    names = [n.strip() for n in str(getattr(args, "approve", "") or "").split(",") if n.strip()]
    known = {t.name for t in tools}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"--approve names tool(s) {', '.join(unknown)} that are not offered; "
            f"tools: {', '.join(sorted(known)) or 'none'}"
        )
    return {name: True for name in names}
