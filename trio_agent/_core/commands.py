"""Commands: what a user may ask of a session, and one table that says when.

Every caller decides with the same rule: ``Session`` in its process (the WebSocket and
the other transports go through it), and the owner of a session on Redis for commands
forwarded from other processes.  :data:`RULES` maps ``(status, op)`` to the rule that
makes the command's events; a pair with no entry is a refusal whose message names the
command, the session, its status and the statuses the command needs — computed from
the table itself, so the words never drift from the rule.  Sans-I/O: :func:`decide`
looks at a :class:`~trio_agent._core.state.State` and returns a :class:`Decision`
(the events to publish, all or none, and what the agent loop must do) or raises
:class:`~trio_agent.errors.SessionStateError`, changing nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal, TypeAlias

import attrs

from ..errors import SessionStateError
from . import events as ev
from .state import STATUSES, State

__all__ = [
    "MAX_COMMAND_ID",
    "OPS",
    "RULES",
    "Approve",
    "Cancel",
    "Command",
    "Decision",
    "Effect",
    "Interrupt",
    "InterruptMode",
    "Resume",
    "UserInput",
    "decide",
    "expected_statuses",
]

InterruptMode = Literal["soft", "hard"]

MAX_COMMAND_ID: Final = 64
"""Characters a command id may have (DESIGN §6): a UUID or a client's counter fits."""


def _mode(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value not in ("soft", "hard"):
        raise ValueError(f"mode must be 'soft' or 'hard', got {value!r}")


def _text(name: str) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_: object, __: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be str, got {type(value).__name__}")

    return check


def _optional_text(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"instruction must be str or None, got {type(value).__name__}")


def _command_id(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"a command id must be str or None, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_COMMAND_ID:
        raise ValueError(f"a command id must be 1 to {MAX_COMMAND_ID} characters, got {len(value)}")


def _id() -> Any:
    """The ``id`` every command may carry: a command whose id the session already
    applied is not applied again (DESIGN §6)."""
    return attrs.field(default=None, kw_only=True, validator=_command_id)


@attrs.frozen(slots=True)
class UserInput:
    """``send(text)``: starts a run, steers a running one, resumes an interrupted one."""

    op: ClassVar[str] = "user_input"
    text: str = attrs.field(validator=_text("text"))
    id: str | None = _id()


@attrs.frozen(slots=True)
class Interrupt:
    """``interrupt(mode, reason, grace)``: pause the run (hard: now; soft: at the step
    boundary, escalating to hard after ``grace`` seconds if given)."""

    op: ClassVar[str] = "interrupt"
    mode: InterruptMode = attrs.field(default="soft", validator=_mode)
    reason: str = attrs.field(default="", validator=_text("reason"))
    grace: float | None = None
    id: str | None = _id()

    def __attrs_post_init__(self) -> None:
        grace = self.grace
        if grace is not None and (
            self.mode != "soft"
            or isinstance(grace, bool)
            or not isinstance(grace, int | float)
            or not (grace >= 0 and math.isfinite(grace))
        ):
            raise ValueError(
                f"grace must be a non-negative number of seconds on a soft interrupt, "
                f"got grace={grace!r} with mode={self.mode!r}"
            )


@attrs.frozen(slots=True)
class Resume:
    """``resume(instruction)``: continue an interrupted run (the instruction, if any, is
    a new user message)."""

    op: ClassVar[str] = "resume"
    instruction: str | None = attrs.field(default=None, validator=_optional_text)
    id: str | None = _id()


@attrs.frozen(slots=True)
class Cancel:
    """``cancel()``: end the run (running or interrupted) with ``done`` ``cancelled``."""

    op: ClassVar[str] = "cancel"
    id: str | None = _id()


@attrs.frozen(slots=True)
class Approve:
    """``approve(call_id)`` / ``deny(call_id, reason)``: the decision on a tool call
    waiting for approval (DESIGN §9)."""

    op: ClassVar[str] = "approve"
    call_id: str = attrs.field(validator=_text("call_id"))
    approved: bool = attrs.field(default=True)
    reason: str = attrs.field(default="", validator=_text("reason"))
    id: str | None = _id()

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.approved, bool):
            raise TypeError(f"approved must be bool, got {type(self.approved).__name__}")


Command: TypeAlias = UserInput | Interrupt | Resume | Cancel | Approve

OPS: Final = ("user_input", "interrupt", "resume", "cancel", "approve")
"""The ops, in the order docs/protocol.md lists them."""

Effect = Literal["start_run", "steer", "resume", "interrupt", "cancel", "approve", "duplicate"]
"""What the agent loop must do once a decision's events are published (``duplicate``:
nothing — the command was applied already)."""


@attrs.frozen(slots=True)
class Decision:
    """What a command comes to: its events (unstamped, published all or none; a cancel
    has none — its ``done`` comes from the loop) and the loop's part (:data:`Effect`).
    A ``duplicate`` has no events: ``applied`` is the seq of the event that applied the
    command the first time."""

    effect: Effect
    events: tuple[ev.Event, ...]
    applied: int | None = None


# ---- the rules ----------------------------------------------------------------------

_Rule = Callable[[State, Command], Decision]


def _start_run(s: State, c: Command) -> Decision:
    assert isinstance(c, UserInput)
    run = s.run + 1
    return Decision(
        "start_run",
        (ev.UserInput(run=run, text=c.text, command_id=c.id), ev.RunStarted(run=run)),
    )


def _steer(s: State, c: Command) -> Decision:
    assert isinstance(c, UserInput)
    return Decision("steer", (ev.UserInput(run=s.run, step=s.step, text=c.text, command_id=c.id),))


def _resume_with(s: State, c: Command) -> Decision:
    assert isinstance(c, UserInput)
    return Decision(
        "resume",
        (
            ev.UserInput(run=s.run, step=s.step, text=c.text, command_id=c.id),
            ev.Resume(run=s.run, step=s.step),
        ),
    )


def _interrupt(s: State, c: Command) -> Decision:
    assert isinstance(c, Interrupt)
    return Decision(
        "interrupt",
        (
            ev.Interrupt(
                run=s.run,
                step=s.step,
                mode=c.mode,
                reason=c.reason,
                grace=c.grace,
                command_id=c.id,
            ),
        ),
    )


def _resume(s: State, c: Command) -> Decision:
    assert isinstance(c, Resume)
    return Decision(
        "resume",
        (ev.Resume(run=s.run, step=s.step, instruction=c.instruction, command_id=c.id),),
    )


def _cancel(s: State, c: Command) -> Decision:
    return Decision("cancel", ())


def _approve(s: State, c: Command) -> Decision:
    assert isinstance(c, Approve)
    return Decision(
        "approve",
        (
            ev.ToolApproval(
                run=s.run,
                step=s.step,
                call_id=c.call_id,
                approved=c.approved,
                reason=c.reason,
                command_id=c.id,
            ),
        ),
    )


RULES: Final[Mapping[tuple[str, str], _Rule]] = {
    ("idle", "user_input"): _start_run,
    ("done", "user_input"): _start_run,
    ("error", "user_input"): _start_run,
    ("thinking", "user_input"): _steer,
    ("acting", "user_input"): _steer,
    ("interrupted", "user_input"): _resume_with,
    ("thinking", "interrupt"): _interrupt,
    ("acting", "interrupt"): _interrupt,
    ("interrupted", "resume"): _resume,
    ("thinking", "cancel"): _cancel,
    ("acting", "cancel"): _cancel,
    ("interrupted", "cancel"): _cancel,
    ("thinking", "approve"): _approve,
    ("acting", "approve"): _approve,
}
"""``(status, op) -> rule``: the command is legal in that status, and the rule makes
its events.  No entry: refused (see :func:`decide`)."""

_VERBS: Final = {
    "user_input": "send to",
    "interrupt": "interrupt",
    "resume": "resume",
    "cancel": "cancel",
    "approve": "approve a tool call of",
}


def expected_statuses(op: str) -> str:
    """The statuses ``op`` is legal in, in words (``thinking`` and ``acting`` read as
    ``running``): ``"running or interrupted"``."""
    statuses = [s for s in STATUSES if (s, op) in RULES]
    words: list[str] = []
    for s in statuses:
        word = "running" if s in ("thinking", "acting") else s
        if word not in words:
            words.append(word)
    return " or ".join(words)


def decide(session: str, state: State, command: Command, *, cancelling: bool = False) -> Decision:
    """The decision for ``command`` in ``state`` (of session ``session``), or
    ``SessionStateError`` naming why not.

    First, a command whose ``id`` the session already applied is a ``duplicate``
    (applied once, DESIGN §6).  Besides the table, three refusals need more than the
    status: an ``approve`` for a call that is not waiting for approval; an interrupt
    while an accepted interrupt has not taken effect yet (``state.interrupting``: a
    second soft one, or any after a hard one — a hard one may still escalate a soft
    one); and an interrupt while the run is being cancelled (``cancelling``: a cancel has
    no event of its own until its ``done``).
    """
    op = command.op
    if command.id is not None:
        applied = state.applied(command.id)
        if applied is not None:
            return Decision("duplicate", (), applied)
    rule = RULES.get((state.status, op))
    if rule is None:
        verb = _VERBS[op]
        if isinstance(command, Approve) and not command.approved:
            verb = "deny a tool call of"
        raise SessionStateError(
            f"can't {verb} session {session!r}: it is {state.status}, not {expected_statuses(op)}"
        )
    if isinstance(command, Approve):
        call = state.call(command.call_id)
        verb = "approve" if command.approved else "deny"
        if call is None:
            raise SessionStateError(
                f"can't {verb} tool call {command.call_id!r} of session {session!r}: "
                "the current step has no such call"
            )
        if call.status != "awaiting_approval":
            raise SessionStateError(
                f"can't {verb} tool call {command.call_id!r} of session {session!r}: "
                f"it is {call.status}, not awaiting approval"
            )
    if isinstance(command, Interrupt):
        if cancelling:
            raise SessionStateError(f"can't interrupt session {session!r}: it is being cancelled")
        pending = state.interrupting
        if pending is not None and (pending == "hard" or command.mode == "soft"):
            raise SessionStateError(
                f"can't interrupt session {session!r}: a {pending} interrupt is already pending"
            )
    return rule(state, command)
