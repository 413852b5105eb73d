"""A real HTTP server on 127.0.0.1 that replays recorded provider streams.

Hypercorn's trio worker serves a small ASGI app in the test's nursery::

    server = await start_provider_server(nursery, Reply.sse(recording("openai", "text")))
    model = OpenAIChatModel("m", base_url=server.url + "/v1", client=...)

Each request takes the next queued :class:`Reply`: its status, headers and body pieces
(each piece is its own ``http.response.body`` message, so the body can be split at any
byte), optionally stalling or dropping the connection after the pieces.  The server
records every request (:attr:`ProviderServer.requests`) and notices a client that goes
away before the body is complete (:attr:`ProviderServer.disconnected`).

Also here: :func:`collect`, which folds a model's chunks into what a user would see
(text, reasoning, tool calls by index, the finish), for comparing streams.
"""

from __future__ import annotations

import itertools
import json
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypothesis import strategies as st

from trio_agent.models import (
    Chunk,
    Finish,
    ModelError,
    ReasoningDelta,
    ReasoningEnd,
    Retrying,
    TextDelta,
    ToolCallChunk,
    ToolCallEnd,
    make_client,
)

RECORDINGS = Path(__file__).parent / "recordings"

#: Seconds hypercorn waits for open connections when the test's nursery is cancelled.
GRACEFUL_TIMEOUT = 0.1


def recording(provider: str, name: str) -> bytes:
    """The bytes of ``tests/recordings/{provider}/{name}.sse``."""
    return (RECORDINGS / provider / f"{name}.sse").read_bytes()


def recording_names(provider: str) -> list[str]:
    return sorted(path.stem for path in (RECORDINGS / provider).glob("*.sse"))


@attrs.frozen
class Reply:
    """One scripted answer.

    ``pieces`` are sent one ``http.response.body`` message each, ``gap`` seconds apart
    (0 still yields to the scheduler between pieces).  Then: ``stall`` keeps the
    response open without sending anything until the client goes away; ``drop`` ends
    the app without finishing the body, so hypercorn closes the connection mid-body;
    otherwise the body is ended normally.  ``stall_before_headers`` sends nothing at all.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("content-type", "text/event-stream"),)
    pieces: tuple[bytes, ...] = ()
    gap: float = 0.0
    stall: bool = False
    drop: bool = False
    stall_before_headers: bool = False

    @classmethod
    def sse(cls, body: bytes, *, cuts: Iterable[int] = (), **kwargs: Any) -> Reply:
        """An event stream whose body is split at the byte offsets ``cuts``."""
        return cls(pieces=split(body, cuts), **kwargs)

    @classmethod
    def json(cls, status: int, payload: object, headers: Sequence[tuple[str, str]] = ()) -> Reply:
        """A JSON (error) answer."""
        return cls(
            status=status,
            headers=(("content-type", "application/json"), *headers),
            pieces=(json.dumps(payload).encode(),),
        )


def split(body: bytes, cuts: Iterable[int]) -> tuple[bytes, ...]:
    """``body`` cut at the given offsets (those outside 1..len-1 are ignored)."""
    offsets = sorted({cut for cut in cuts if 0 < cut < len(body)})
    bounds = [0, *offsets, len(body)]
    return tuple(body[start:end] for start, end in itertools.pairwise(bounds))


#: Most cut points one example of the byte-split property makes: enough to split many
#: events and characters at once, few enough to keep each example fast.
MAX_CUTS = 16


def byte_cuts(body: bytes) -> st.SearchStrategy[list[int]]:
    """Offsets to split ``body`` at: anywhere, with a bias towards the inside of
    multi-byte UTF-8 characters (the continuation bytes), the splits that matter most."""
    inside_characters = [i for i, byte in enumerate(body) if byte & 0xC0 == 0x80]
    anywhere = st.integers(min_value=1, max_value=len(body) - 1)
    where = (
        st.one_of(anywhere, st.sampled_from(inside_characters)) if inside_characters else anywhere
    )
    return st.lists(where, max_size=MAX_CUTS)


@attrs.frozen
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time: float
    #: The client's port: two requests with the same one came over one connection.
    client_port: int

    def json(self) -> Any:
        return json.loads(self.body)


class ProviderServer:
    """The replaying server; start it with ``await nursery.start(server.serve)``."""

    def __init__(self, replies: Iterable[Reply] = ()) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.requests: list[ReceivedRequest] = []
        #: Set when a client closed its connection before its response was complete.
        self.disconnected = trio.Event()
        self.disconnects = 0
        self.url = ""

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.loglevel = "WARNING"
        config.graceful_timeout = GRACEFUL_TIMEOUT
        async with trio.open_nursery() as nursery:
            app: Any = self._app  # a plain ASGI callable; hypercorn's types are stricter
            binds: list[str] = await nursery.start(partial(serve, app, config))
            self.url = binds[0]
            task_status.started(self.url)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http", scope["type"]
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._note_disconnect()
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.requests.append(
            ReceivedRequest(
                method=scope["method"],
                path=scope["path"],
                headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
                body=body,
                time=trio.current_time(),
                client_port=scope["client"][1],
            )
        )
        if not self.replies:
            reply = Reply.json(500, {"error": {"message": "the test queued no reply"}})
        else:
            reply = self.replies.popleft()
        async with trio.open_nursery() as nursery:
            # Watch for the client going away while the response is being written.
            nursery.start_soon(self._watch, receive, nursery.cancel_scope)
            await self._respond(reply, send)
            nursery.cancel_scope.cancel()

    async def _respond(self, reply: Reply, send: Any) -> None:
        if reply.stall_before_headers:
            await trio.sleep_forever()
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in reply.headers],
            }
        )
        for piece in reply.pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await trio.sleep(reply.gap)
        if reply.stall:
            await trio.sleep_forever()
        if reply.drop:
            return  # hypercorn closes the connection: the chunked body never ends
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Any, scope: trio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._note_disconnect()
                scope.cancel()
                return

    def _note_disconnect(self) -> None:
        self.disconnects += 1
        self.disconnected.set()


async def start_provider_server(nursery: trio.Nursery, *replies: Reply) -> ProviderServer:
    """A server running in ``nursery`` (cancel the nursery to stop it)."""
    server = ProviderServer(replies)
    await nursery.start(server.serve)
    return server


# ---- folding chunks -------------------------------------------------------------------


@attrs.define
class Collected:
    """What a stream amounted to.

    ``calls`` maps a call's key (its index, or ``("whole", n)`` for the n-th call sent
    whole with ``index=None``) to ``[call_id, name, raw_arguments]``.
    """

    text: str = ""
    reasoning: str = ""
    calls: dict[object, list[Any]] = attrs.Factory(dict)
    ended: list[int] = attrs.Factory(list)
    retries: list[Retrying] = attrs.Factory(list)
    finish: Finish | None = None
    chunks: list[Chunk] = attrs.Factory(list)

    def arguments(self) -> dict[object, Any]:
        """Each call's arguments parsed (empty text is ``{}``); invalid JSON is the
        string ``"<invalid>"``."""
        parsed: dict[object, Any] = {}
        for key, (_call_id, _name, raw) in self.calls.items():
            try:
                parsed[key] = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError:
                parsed[key] = "<invalid>"
        return parsed

    def summary(self) -> dict[str, Any]:
        """Everything a user sees, for comparing two streams of one answer."""
        return {
            "text": self.text,
            "reasoning": self.reasoning,
            "calls": {
                str(key): (call_id, name, self.arguments()[key])
                for key, (call_id, name, _raw) in self.calls.items()
            },
            "ended": self.ended,
            "finish": self.finish,
        }


def fold(chunks: Iterable[Chunk]) -> Collected:
    collected = Collected()
    whole = 0
    for chunk in chunks:
        collected.chunks.append(chunk)
        if isinstance(chunk, TextDelta):
            collected.text += chunk.text
        elif isinstance(chunk, ReasoningDelta):
            collected.reasoning += chunk.text
        elif isinstance(chunk, ReasoningEnd):  # where a block was sealed, and how
            seal = f"signed:{chunk.signature}" if chunk.redacted is None else "redacted:"
            collected.reasoning += f"⟨{seal}{chunk.redacted or ''}⟩"
        elif isinstance(chunk, ToolCallChunk):
            key: object
            if chunk.index is None:
                key = ("whole", whole)
                whole += 1
            else:
                key = chunk.index
            call = collected.calls.setdefault(key, [None, None, ""])
            if chunk.call_id is not None:
                call[0] = chunk.call_id
            if chunk.name is not None:
                call[1] = chunk.name
            call[2] += chunk.arguments
        elif isinstance(chunk, ToolCallEnd):
            collected.ended.append(chunk.index)
        elif isinstance(chunk, Retrying):
            collected.retries.append(chunk)
        else:
            assert isinstance(chunk, Finish)
            assert collected.finish is None, "two Finish chunks"
            collected.finish = chunk
    return collected


async def collect(stream: AsyncIterator[Chunk]) -> Collected:
    """Fold a whole stream (it must end)."""
    return fold([chunk async for chunk in stream])


async def collect_until_error(stream: AsyncIterator[Chunk]) -> tuple[Collected, ModelError]:
    """Fold a stream that must fail; returns what came before the error, and the error."""
    chunks: list[Chunk] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except ModelError as error:
        return fold(chunks), error
    raise AssertionError(f"the stream ended without a ModelError: {fold(chunks).summary()}")


def assembled_calls(chunks: Iterable[Chunk]) -> list[tuple[Any, ...]] | None:
    """The calls ``trio_agent._assembler.ToolCallAssembler`` makes of ``chunks``, as
    ``(call_id, name, arguments, error)``; ``None`` when there is no assembler yet."""
    try:
        from trio_agent._core.assembler import CallReady, ToolCallAssembler
    except ImportError:
        return None
    if not hasattr(ToolCallAssembler, "feed"):
        return None
    assembler = ToolCallAssembler()
    facts: list[Any] = []
    for chunk in chunks:
        if isinstance(chunk, ToolCallChunk | ToolCallEnd):
            facts.extend(assembler.feed(chunk))
    facts.extend(assembler.finish())
    return [
        (fact.call_id, fact.name, fact.arguments, fact.error)
        for fact in facts
        if isinstance(fact, CallReady)
    ]


class CountingTransport(httpx.AsyncBaseTransport):
    """A transport that counts the response streams it handed out and that are not
    closed yet (httpx's transport API): how a test sees, without yielding to the
    scheduler, that a stream let go of its response at once rather than when the
    garbage collector got to it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.open = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.open += 1
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Counted(response, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Counted(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, transport: CountingTransport) -> None:
        self.response = response
        self.transport = transport
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.open -= 1
        await self.response.aclose()


_TRANSPORTS: weakref.WeakKeyDictionary[httpx.AsyncClient, CountingTransport] = (
    weakref.WeakKeyDictionary()
)


def counting_client() -> httpx.AsyncClient:
    """``make_client(trust_env=False)`` whose open responses :func:`open_responses` counts."""
    made: list[CountingTransport] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        made.append(CountingTransport(inner))
        return made[0]

    client = make_client(trust_env=False, wrap_transport=wrap)
    _TRANSPORTS[client] = made[0]
    return client


def open_responses(client: httpx.AsyncClient) -> int:
    """Responses of ``client`` (made by :func:`counting_client`) not closed yet."""
    return _TRANSPORTS[client].open
