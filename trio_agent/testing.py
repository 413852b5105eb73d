"""Helpers for testing agents built on trio-agent — the ones our own tests use.

- :class:`ScriptBuilder` / :class:`ScriptedModel`: deterministic, offline models.
- :func:`check_invariants`: checks an event log against the invariants of the design
  contract (DESIGN §3, 1–5 and 8) and raises :class:`InvariantViolation` with a message
  that names the invariant, the events and their seqs.
- :func:`schedules` and :func:`drive`: hypothesis strategies for interrupt schedules
  (soft, hard, grace, resume, cancel, steer at arbitrary virtual times) and a driver
  that applies one to a session.
- :class:`RecordingModel`: wraps a model and records the messages of every call, so a
  test can check that each steering message reached the next model call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Final

import attrs
import trio

from ._core import events as ev
from ._core.model import Chunk, Message, Model, ToolSpec, model_identity
from ._core.reduce import reduce
from ._core.state import State, initial_state
from ._runtime import Session
from .errors import ReduceError, SessionStateError
from .models.scripted import ScriptBuilder, ScriptedModel

__all__ = [
    "Action",
    "InvariantViolation",
    "RecordingModel",
    "ScriptBuilder",
    "ScriptedModel",
    "check_invariants",
    "drive",
    "schedules",
]


class InvariantViolation(AssertionError):
    """An event log breaks an invariant of DESIGN §3; the message says which and where."""


_MODEL_OR_TOOL: Final = frozenset(
    {
        "thinking",
        "token_stream",
        "reasoning",
        "model_finished",
        "tool_call_start",
        "tool_call_delta",
        "tool_call",
        "tool_progress",
        "tool_result",
    }
)


def _where(e: ev.Event) -> str:
    return f"{e.type!r} at seq {e.seq} (run {e.run}, step {e.step})"


def check_invariants(log: Sequence[ev.Event], state: State | None = None) -> State:
    """Check DESIGN §3 invariants 1–5 and 8, and §9's invariant 9, over one session's
    ``log``.

    ``state``, when given, is the live state, which must equal the fold of the log
    (invariant 5).  Returns the folded state.  Raises :class:`InvariantViolation`.
    """
    session = state.session if state is not None else (log[0].session if log else "")
    folded = initial_state(session)
    open_calls: dict[tuple[int, int, str], ev.Event] = {}
    requested: dict[tuple[int, int, str], ev.Event] = {}  # approval asked for
    decided: dict[tuple[int, int, str], bool] = {}  # ... and given
    ended_runs: set[int] = set()
    paused_run: int | None = None
    soft_pending = False
    accepted_inputs: list[str] = []
    for i, e in enumerate(log):
        # 1. seq is 1, 2, 3, … with no gap and no repeat.
        if e.seq != i + 1:
            raise InvariantViolation(
                f"invariant 1: event #{i + 1} is {_where(e)}; expected seq {i + 1}"
            )
        # 4. nothing after done; no model or tool event while interrupted.
        if e.run in ended_runs:
            raise InvariantViolation(f"invariant 4: {_where(e)} after run {e.run} was done")
        if paused_run == e.run and e.type in _MODEL_OR_TOOL:
            raise InvariantViolation(f"invariant 4: {_where(e)} while run {e.run} was interrupted")
        if e.type == "resume":
            paused_run = None
        elif e.type == "interrupt":
            soft_pending = e.mode == "soft"  # type: ignore[attr-defined]
        elif e.type == "tool_call_start":
            key = (e.run, e.step, e.call_id)  # type: ignore[attr-defined]
            if key in open_calls:
                raise InvariantViolation(f"invariant 2: {_where(e)} starts call {key[2]!r} twice")
            open_calls[key] = e
        elif e.type == "tool_approval_requested":
            key = (e.run, e.step, e.call_id)  # type: ignore[attr-defined]
            if key not in open_calls or key in requested:
                raise InvariantViolation(
                    f"invariant 9: {_where(e)} asks for approval of call {key[2]!r}, which "
                    + ("asked already" if key in requested else "has no open tool_call_start")
                )
            requested[key] = e
        elif e.type == "tool_approval":
            key = (e.run, e.step, e.call_id)  # type: ignore[attr-defined]
            if key not in requested or key in decided or key not in open_calls:
                raise InvariantViolation(
                    f"invariant 9: {_where(e)} decides call {key[2]!r}, which "
                    + ("was decided already" if key in decided else "is not waiting for it")
                )
            decided[key] = e.approved  # type: ignore[attr-defined]
        elif e.type == "tool_result":
            key = (e.run, e.step, e.call_id)  # type: ignore[attr-defined]
            if key not in open_calls:
                raise InvariantViolation(
                    f"invariant 2: {_where(e)} for call {key[2]!r}, which has no open "
                    "tool_call_start"
                )
            del open_calls[key]
            status = e.status  # type: ignore[attr-defined]
            waited = key in requested and key not in decided  # it never started
            # 9. a call that asked for approval runs only once approved; undecided, it
            # can only have been cancelled; denied, it ends denied (or cancelled).
            if key in requested:
                allowed = (
                    {"cancelled"}
                    if waited
                    else ({"denied", "cancelled"} if not decided[key] else None)
                )
                if (allowed is not None and status not in allowed) or (
                    allowed is None and status == "denied"
                ):
                    how = "undecided" if waited else ("denied" if not decided[key] else "approved")
                    raise InvariantViolation(
                        f"invariant 9: {_where(e)} ends call {key[2]!r} {status}, "
                        f"but its approval was {how}"
                    )
            # 3. a soft interrupt never cancels a started tool call (unless it escalated,
            # which publishes a hard interrupt first, or the run was cancelled); a call
            # still waiting for approval had not started.
            if (
                soft_pending
                and status == "cancelled"
                and not waited
                and not _ends_cancelled(log, i, e.run)
            ):
                raise InvariantViolation(
                    f"invariant 3: {_where(e)} cancelled call {key[2]!r} under a soft interrupt"
                )
        elif e.type in ("interrupted", "done"):
            left = [k for k in open_calls if k[0] == e.run]
            if left:
                starts = ", ".join(f"{k[2]!r} (started at seq {open_calls[k].seq})" for k in left)
                raise InvariantViolation(
                    f"invariant 2: {_where(e)} while tool calls {starts} have no tool_result"
                )
            soft_pending = False
            if e.type == "done":
                ended_runs.add(e.run)
                # 8. a run that completes has answered every message sent to it.
                if e.status == "completed" and folded.pending_inputs:  # type: ignore[attr-defined]
                    raise InvariantViolation(
                        f"invariant 8: {_where(e)} completed the run while user messages "
                        f"{list(folded.pending_inputs)!r} were still pending"
                    )
            else:
                paused_run = e.run
        try:
            folded = reduce(folded, e)
        except ReduceError as exc:
            raise InvariantViolation(f"invariant 5: {_where(e)} does not reduce: {exc}") from None
        if e.type == "user_input":
            accepted_inputs.append(e.text)  # type: ignore[attr-defined]
        elif e.type == "resume" and e.instruction is not None:  # type: ignore[attr-defined]
            accepted_inputs.append(e.instruction)  # type: ignore[attr-defined]
        elif e.type == "thinking":
            # 8. every user message accepted so far is in the model's input.
            users = [m.content for m in folded.messages if m.role == "user"]
            if users != accepted_inputs:
                missing = [t for t in accepted_inputs if t not in users]
                raise InvariantViolation(
                    f"invariant 8: at {_where(e)} the model input lacks accepted user "
                    f"messages {missing!r}"
                )
    # 5. the fold of the log is the live state.
    if state is not None and folded != state:
        raise InvariantViolation(
            "invariant 5: the fold of the log differs from the live state:\n"
            f"  folded: {folded!r}\n  live:   {state!r}"
        )
    return folded


def _ends_cancelled(log: Sequence[ev.Event], i: int, run: int) -> bool:
    """The run's next ``interrupted``/``done`` after ``log[i]`` is ``done`` cancelled."""
    for e in log[i + 1 :]:
        if e.run == run and e.type in ("interrupted", "done"):
            return e.type == "done" and e.status == "cancelled"  # type: ignore[attr-defined]
    return False


# ---- recording model ----------------------------------------------------------------


class RecordingModel:
    """A model wrapper that records the messages of every call (``calls``)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.calls: list[tuple[Message, ...]] = []
        # (what the wrapped model says it is: the ``thinking`` events carry it)
        self.provider_name, self.model_name = model_identity(model)

    def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncIterator[Chunk]:
        self.calls.append(tuple(messages))
        return self.model.stream(messages, tools)

    async def aclose(self) -> None:
        await self.model.aclose()


# ---- interrupt schedules ------------------------------------------------------------


@attrs.frozen(slots=True)
class Action:
    """One command at virtual time ``at`` (seconds after the schedule starts).

    ``kind`` is ``soft``, ``hard``, ``resume``, ``cancel``, ``steer``, ``send``,
    ``approve`` or ``deny`` (the oldest call waiting for approval, if any: else a call
    id that waits for nothing, which must be refused); ``grace`` applies to ``soft``;
    ``text`` to ``resume``, ``steer``, ``send`` and ``deny`` (its reason).
    """

    at: float
    kind: str
    text: str | None = None
    grace: float | None = None


def schedules(*, max_actions: int = 8, max_time: float = 5.0) -> Any:
    """A hypothesis strategy of interrupt schedules: lists of :class:`Action` sorted by
    time.  Requires hypothesis (a test dependency, not a runtime one)."""
    from hypothesis import strategies as st

    times = st.floats(min_value=0.0, max_value=max_time, allow_nan=False)
    words = st.text(alphabet="abcdefghij", min_size=1, max_size=6)
    action = st.one_of(
        st.builds(
            Action,
            at=times,
            kind=st.just("soft"),
            grace=st.one_of(st.none(), st.floats(min_value=0.0, max_value=2.0)),
        ),
        st.builds(Action, at=times, kind=st.just("hard")),
        st.builds(Action, at=times, kind=st.just("resume"), text=st.one_of(st.none(), words)),
        st.builds(Action, at=times, kind=st.just("cancel")),
        st.builds(Action, at=times, kind=st.just("steer"), text=words),
        st.builds(Action, at=times, kind=st.just("approve")),
        st.builds(Action, at=times, kind=st.just("deny"), text=words),
    )
    return st.lists(action, max_size=max_actions).map(lambda a: sorted(a, key=lambda x: x.at))


_REASON: Final = "schedule"


def _acknowledges(action: Action, e: ev.Event) -> bool:
    """``e`` is the acknowledgement a command of ``action``'s kind publishes."""
    if action.kind in ("soft", "hard"):
        return isinstance(e, ev.Interrupt) and e.reason == _REASON
    if action.kind == "resume":
        return isinstance(e, ev.Resume)
    if action.kind in ("steer", "send"):
        return isinstance(e, ev.UserInput)
    if action.kind in ("approve", "deny"):
        return isinstance(e, ev.ToolApproval) and e.reason != "approval timed out"
    return False


async def drive(session: Session, schedule: Iterable[Action]) -> list[tuple[Action, str]]:
    """Apply ``schedule`` to ``session`` at its virtual times.

    A command that makes no sense at that moment must raise ``SessionStateError`` and
    change nothing — checked here (the log must not grow).  Returns what happened to
    each action: ``"ok"`` or the refusal message.
    """
    start = trio.current_time()
    outcomes: list[tuple[Action, str]] = []
    for action in schedule:
        await trio.sleep_until(start + action.at)
        before = session.log.last_seq
        try:
            if action.kind == "soft":
                await session.interrupt("soft", reason=_REASON, grace=action.grace)
            elif action.kind == "hard":
                await session.interrupt("hard", reason=_REASON)
            elif action.kind == "resume":
                await session.resume(action.text)
            elif action.kind == "cancel":
                await session.cancel()
            elif action.kind in ("steer", "send"):
                await session.send(action.text or "")
            elif action.kind in ("approve", "deny"):
                waiting = session.state.pending_approvals
                call_id = waiting[0].call_id if waiting else "no-such-call"
                if action.kind == "approve":
                    await session.approve(call_id)
                else:
                    await session.deny(call_id, action.text or "")
            else:
                raise ValueError(f"unknown action kind {action.kind!r}")
        except SessionStateError as exc:
            # The loop may publish meanwhile; the refused command itself must not.
            # (the loop publishes neither a ``resume`` nor an ``interrupt`` with the
            # schedule's reason: escalations say "grace period ran out: …").
            added = session.log.replay(before) if session.log.last_seq > before else []
            if any(_acknowledges(action, e) for e in added):
                raise InvariantViolation(
                    f"refused command {action.kind!r} published an event: {exc}"
                ) from None
            outcomes.append((action, str(exc)))
        else:
            outcomes.append((action, "ok"))
    return outcomes
