"""AG-UI, the Agent–User Interaction protocol (DESIGN §10), so that existing AG-UI
front-ends connect: the endpoints and the stream.

- ``POST /agui`` — a ``RunAgentInput`` (the official package's model): ``threadId`` is the
  session, ``runId`` the AG-UI run.  With ``resume`` entries, each answers an interrupt a
  run ended with (an approval: our ``approve``; a pause: our ``resume`` or ``cancel``) and
  the stream starts where that run ended; otherwise the last message of ``messages``,
  a user message, is sent (it starts a run, steers the one going, or resumes a paused
  one) and the stream starts from the state now.  ``tools``, ``context``, ``state`` and
  ``forwardedProps`` are accepted and not used: the agent's tools and state are the
  server's.  A refusal is an HTTP error with ``{"error": {"code", "message"}}``;
  otherwise the answer is the AG-UI event stream, as SSE (:class:`AGUIClient`).
- ``GET /agui/{threadId}`` — with ``Last-Event-ID``, the AG-UI run that stream was
  (``?runId=`` picks one, else the newest holding that id) from where it left off,
  without starting anything: AG-UI reserves a ``resumable`` capability and specifies
  nothing for it; this is ours.  Without, it joins the thread as it is now: the
  snapshots, what is in progress, live events until the run ends or waits.

Every SSE message carries an ``id``: ``<seq>`` on the last AG-UI event made from our
event ``seq``, ``<seq>.<k>`` on the k-th before it (the prelude counts as the events of
the seq the run starts after), so that a rejoin after any message is exact.  A stream
is a :class:`~.sse.StreamClient`: the same bounded subscription, batching, eviction,
limits and heartbeat as the WebSocket.  Closing it never cancels the run.  The events
and their order are :mod:`.agui_mapping`'s; the mapping table is ``docs/agui.md``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from .._bus import Subscription
from .._core import events as ev
from .._core.commands import Approve, Cancel, Command, Resume, UserInput
from .._runtime import validate_session_id
from ..errors import LogTrimmed
from . import rest
from .agui_interrupts import APPROVAL, parse_interrupt_id
from .agui_runs import AGUIRun
from .client import apply
from .http import HTTPConnection, Refused, Request, session_id_param
from .sse import StreamClient, encode_message

if TYPE_CHECKING:
    from ag_ui.core import BaseEvent, RunAgentInput

    from .._runtime import Session
    from .agui_mapping import AGUIMapper
    from .server import AgentServer

__all__ = [
    "JOIN_PATH",
    "RUN_PATH",
    "AGUIClient",
    "Plan",
    "command_id",
    "join_run",
    "parse_last_id",
    "plan_input",
    "post_run",
]

RUN_PATH: Final = re.compile(r"/agui")
JOIN_PATH: Final = re.compile(r"/agui/([^/?#]*)")
_LAST_ID: Final = re.compile(r"([0-9]{1,18})(?:\.([0-9]{1,6}))?")


@attrs.frozen
class Plan:
    """What a ``RunAgentInput`` comes to: our commands, applied in order, and where its
    stream starts (after that seq; None: from the state now)."""

    commands: tuple[Command, ...]
    after: int | None = None


def command_id(run_id: str, what: str) -> str:
    """The id of a command an AG-UI run's input became: the same input posted again
    (a retry, the same ``runId``) is applied once."""
    digest = hashlib.sha256(f"{run_id}\0{what}".encode()).hexdigest()[:32]
    return f"agui-{digest}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(getattr(part, "text", "") for part in content or ())


def _shown(text: str, limit: int = 80) -> str:
    """``text`` for an error message: a long one cut, saying how long it was."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def _within(text: str, max_text: int | None, what: str) -> str:
    if max_text is not None and len(text) > max_text:
        raise Refused(
            413,
            f"{what} is {len(text)} characters, over the limit of {max_text} "
            "(max_frame_size: one command's text, as on the WebSocket)",
            code="too_large",
        )
    return text


def plan_input(input: RunAgentInput, *, max_text: int | None = None) -> Plan:
    """Our commands for ``input`` (see the module docstring), or :class:`Refused` (400;
    413 for a message, an instruction or a reason over ``max_text`` characters)."""
    if input.resume:
        commands: list[Command] = []
        after: int | None = None
        for entry in input.resume:
            parsed = parse_interrupt_id(entry.interrupt_id)
            if parsed is None:
                raise Refused(
                    400, f"unknown interrupt {_shown(entry.interrupt_id)}", code="bad_command"
                )
            kind, key, seq = parsed
            after = seq if after is None else min(after, seq)
            payload = entry.payload if isinstance(entry.payload, dict) else {}
            cid = command_id(input.run_id, entry.interrupt_id)
            if kind == APPROVAL:
                approved = payload.get("approved", True)
                reason = payload.get("reason", "")
                if not isinstance(approved, bool) or not isinstance(reason, str):
                    raise Refused(
                        400,
                        f"the answer to {_shown(entry.interrupt_id)}: 'approved' must be a bool "
                        "and 'reason' a string",
                        code="bad_command",
                    )
                _within(reason, max_text, "the reason")
                if entry.status == "cancelled":
                    approved, reason = False, reason or "cancelled"
                commands.append(Approve(key, approved, reason, id=cid))
            elif entry.status == "cancelled":
                commands.append(Cancel(id=cid))
            else:
                instruction = payload.get("instruction")
                if instruction is not None and not isinstance(instruction, str):
                    raise Refused(400, "'instruction' must be a string", code="bad_command")
                if instruction is not None:
                    _within(instruction, max_text, "the instruction")
                commands.append(Resume(instruction, id=cid))
        return Plan(tuple(commands), after)
    if not input.messages or input.messages[-1].role != "user":
        last = input.messages[-1].role if input.messages else "nothing"
        raise Refused(
            400,
            f"nothing to run: the last message must be the user's, got {last}",
            code="bad_command",
        )
    text = _within(_text(input.messages[-1].content), max_text, "the last user message")
    if not text:
        raise Refused(400, "the last user message has no text", code="bad_command")
    return Plan((UserInput(text, id=command_id(input.run_id, "input")),))


def parse_last_id(request: Request) -> tuple[int, int | None] | None:
    """The ``Last-Event-ID`` (``<seq>`` or ``<seq>.<k>``), or None without one."""
    ids = [v.strip() for v in request.header("last-event-id") if v.strip()]
    if not ids:
        return None
    found = _LAST_ID.fullmatch(ids[0]) if len(ids) == 1 else None
    if found is None:
        raise Refused(400, f"Last-Event-ID must be <seq> or <seq>.<k>, got {ids!r}")
    return int(found.group(1)), None if found.group(2) is None else int(found.group(2))


class AGUIClient(StreamClient):
    """One AG-UI stream: a run a ``POST`` asks for (``plan`` and ``input``), a run
    rejoined after ``(seq, k)`` (``rejoin``), or a thread joined as it is."""

    transport = "agui"

    def __init__(
        self,
        http: HTTPConnection,
        server: AgentServer,
        headers: Sequence[tuple[str, str]],
        *,
        thread: str,
        run_id: str,
        plan: Plan | None = None,
        input: RunAgentInput | None = None,
        rejoin: tuple[AGUIRun, int, int | None] | None = None,
    ) -> None:
        super().__init__(http, server.counters, server.limits, headers)
        self.server = server
        self.thread = thread
        self.run_id = run_id
        self.plan = plan
        self.input = input
        self.rejoin = rejoin
        self.mapper: AGUIMapper | None = None
        self.record: AGUIRun | None = None  # the run as rejoining streams will find it

    async def run(
        self, session: Session, sub: Subscription, snapshot: ev.StateSnapshot | None
    ) -> None:
        with self.scope:
            if not await self.begin(session, snapshot):
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.pump, sub, None)
                nursery.start_soon(self.watch)

    async def begin(self, session: Session, snapshot: ev.StateSnapshot | None) -> bool:
        """Apply the input, then send how the run starts; False if that is all."""
        from .agui_mapping import AGUIMapper

        if self.rejoin is not None:
            return await self.resume_stream(session)
        own = None
        for command in self.plan.commands if self.plan else ():
            outcome = await apply(session, command)
            if outcome.applied is None:
                await rest.respond_error(self.http, outcome.code, outcome.message, self.headers)
                self.gone = True  # answered: nothing more goes out
                return False
            own = command.id if isinstance(command, UserInput) else own
        if snapshot is not None:
            start, state = snapshot.seq, snapshot.state
        else:
            assert self.plan is not None and self.plan.after is not None
            start, state = self.plan.after, None
        run_id = self.run_id or f"join-{start}"
        mapper = self.mapper = AGUIMapper(self.thread, run_id, start, own)
        if state is None:  # (from the state, the prelude opens what waits)
            mapper.waiting([c.call_id for c in session.state.pending_approvals])
        prelude = mapper.prelude(self.input, state, join=self.plan is None)
        if self.plan is not None:
            # Kept without the input it echoes (a rejoining client has its own): what a
            # record weighs is its conversation, not the body (AGUI_RUNS_BYTES).
            kept = (prelude[0].model_copy(update={"input": None}), *prelude[1:])
            self.record = AGUIRun(
                self.thread, run_id, start, kept, mapper.copy(), size=len(_encode(start, kept))
            )
            self.server.agui_runs.add(self.record)
        return await self.send_group(start, prelude)

    async def resume_stream(self, session: Session) -> bool:
        """A rejoined run: its prelude and the log replayed through a copy of its mapper
        up to where the client is, the rest of that event's AG-UI events sent."""
        assert self.rejoin is not None
        record, seq, k = self.rejoin
        self.record = record  # (where it ends is found by whichever stream sees it)
        mapper = self.mapper = record.mapper.copy()
        if seq == record.start:
            return await self.send_group(seq, list(record.prelude), k or len(record.prelude))
        try:
            events = session.log.window(record.start, seq - record.start)
        except LogTrimmed as exc:
            await self.cannot_resume(f"{exc}")
            return False
        for e in events[:-1]:
            mapper.map(e)
        made = mapper.map(events[-1])
        return await self.send_group(seq, made, len(made) if k is None else k)

    async def cannot_resume(self, why: str) -> None:
        await rest.respond_error(
            self.http,
            "cannot_resume",
            f"can't rejoin thread {self.thread!r}: {why}; POST /agui to go on",
            self.headers,
        )
        self.gone = True

    # ---- framing ---------------------------------------------------------------------------

    async def send_group(self, seq: int, events: Sequence[BaseEvent], skip: int = 0) -> bool:
        """Send the AG-UI events made from our event ``seq`` (but the first ``skip``);
        False if the run ended with them (or the client is gone)."""
        ok = await self.write(_encode(seq, events, skip)) if len(events) > skip else True
        return ok and not self.run_ended(seq)

    def run_ended(self, seq: int) -> bool:
        assert self.mapper is not None
        if not self.mapper.finished:
            return False
        if self.record is not None:
            self.record.end = self.mapper.ended_at
        self.end(1000, "the AG-UI run ended")
        return True

    async def flush(self, sub: Subscription) -> None:
        if self.mapper is None:  # (cut before the run began: nothing of it to map)
            return
        await super().flush(sub)

    async def send_events(self, batch: list[ev.Event]) -> bool:
        mapper = self.mapper
        assert mapper is not None
        out = bytearray()
        for e in batch:
            out += _encode(e.seq, mapper.map(e))
            if mapper.finished:
                break
        if out and not await self.write(bytes(out)):
            return False
        self.counters.frames += 1
        self.counters.events += len(batch)
        return not self.run_ended(batch[-1].seq)

    async def send_frame(self, events: list[dict[str, Any]]) -> bool:
        """Only this client's errors come here (no session event is sent as our wire
        form): before the stream began, an HTTP error; after, a comment."""
        if not self.http.started:
            (error,) = events
            await rest.respond_error(self.http, error["code"], error["message"], self.headers)
            self.gone = True
            return False
        return await self.write(
            b"".join(f": {e['code']}: {e['message']}\n\n".encode() for e in events)
        )

    def resume_hint(self, seq: int) -> str:
        return f"rejoin with GET /agui/{self.thread} and Last-Event-ID: {seq}"

    async def cannot_replay(self, code: str, message: str) -> bool:
        if self.plan is not None:
            return True  # the interrupts' run is gone from the log: start from the state
        await self.cannot_resume(message)
        return False


def _encode(seq: int, events: Sequence[BaseEvent], skip: int = 0) -> bytes:
    last = len(events) - 1
    return b"".join(
        encode_message(
            e.model_dump_json(by_alias=True).encode(),
            id=str(seq) if i == last else f"{seq}.{i + 1}",
        )
        for i, e in enumerate(events)
        if i >= skip
    )


def _thread(thread_id: str, *, in_path: bool = False) -> str:
    """The session of ``threadId`` (as given in the body; percent-decoded in a path)."""
    try:
        return session_id_param(thread_id) if in_path else validate_session_id(thread_id)
    except (Refused, ValueError) as exc:
        raise Refused(400, f"threadId: {exc}", code="bad_command") from None


async def post_run(
    server: AgentServer, http: HTTPConnection, request: Request, match: re.Match[str]
) -> None:
    """``POST /agui`` (see the module docstring)."""
    import pydantic
    from ag_ui.core import RunAgentInput

    cors: list[tuple[str, str]] = []
    try:
        params = request.params(("token",))
        server.access.check(request, params.get("token"))
        cors = server.access.cors_headers(request)
        rest.json_content(request)
        body = await http.read_body(server.limits.max_message_size)
        try:
            input = RunAgentInput.model_validate_json(body)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            raise Refused(
                400, f"not a RunAgentInput: {where}: {first['msg']}", code="bad_input"
            ) from None
        thread = _thread(input.thread_id)
        rest.take_rate(server, http, thread)
        plan = plan_input(input, max_text=server.limits.max_frame_size)
    except Refused as refused:
        await rest.refuse(http, refused, cors)
        return
    client = AGUIClient(
        http, server, cors, thread=thread, run_id=input.run_id, plan=plan, input=input
    )
    try:
        await server.attach(client, thread, plan.after)
    finally:
        await client.aclose()


async def join_run(
    server: AgentServer, http: HTTPConnection, request: Request, match: re.Match[str]
) -> None:
    """``GET /agui/{threadId}`` (see the module docstring)."""
    cors: list[tuple[str, str]] = []
    try:
        params = request.params(("token", "runId"))
        server.access.check(request, params.get("token"))
        cors = server.access.cors_headers(request)
        thread = _thread(match.group(1), in_path=True)
        last = parse_last_id(request)
        rejoin = None
        if last is not None:
            record = server.agui_runs.find(thread, last[0], params.get("runId"))
            if record is None:
                raise Refused(
                    409,
                    f"can't rejoin thread {thread!r} after {last[0]}: no run of it this "
                    "server streamed holds that id; POST /agui to go on",
                    code="cannot_resume",
                )
            rejoin = (record, *last)
    except Refused as refused:
        await rest.refuse(http, refused, cors)
        return
    client = AGUIClient(
        http,
        server,
        cors,
        thread=thread,
        run_id=rejoin[0].run_id if rejoin else params.get("runId", ""),
        rejoin=rejoin,
    )
    try:
        await server.attach(client, thread, None if rejoin is None else rejoin[1])
    finally:
        await client.aclose()
