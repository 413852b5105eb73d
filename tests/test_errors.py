"""One error hierarchy (trio_agent.errors): Closed vs Broken as trio has them."""

from __future__ import annotations

import pytest
import trio

import trio_agent
import trio_agent.models
from trio_agent import errors
from trio_agent import events as ev

CLOSED = [errors.SessionClosed]
BROKEN = [
    errors.LogTrimmed,
    errors.SubscriberEvicted,
    errors.SessionLogError,
    errors.RedisLogError,
    errors.LeaseLost,
]


def test_every_error_of_the_package_is_a_trio_agent_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.TrioAgentError), name


@pytest.mark.parametrize("cls", CLOSED)
def test_closed_errors_are_trios_closed_and_not_broken(cls: type[Exception]) -> None:
    assert issubclass(cls, trio.ClosedResourceError)
    assert not issubclass(cls, trio.BrokenResourceError)


@pytest.mark.parametrize("cls", BROKEN)
def test_broken_errors_are_trios_broken_and_not_closed(cls: type[Exception]) -> None:
    assert issubclass(cls, trio.BrokenResourceError)
    assert not issubclass(cls, trio.ClosedResourceError)


def test_the_public_names_are_the_hierarchys() -> None:
    for name in ("LogTrimmed", "SubscriberEvicted", "SessionStateError", "ProtocolError"):
        assert getattr(trio_agent, name) is getattr(errors, name)
    assert trio_agent.models.ModelError is errors.ModelError
    assert ev.ProtocolError is errors.ProtocolError


async def test_a_trimmed_replay_is_broken_when_received() -> None:
    bus = trio_agent.EventBus("s1", log=trio_agent.EventLog(max_events=2))
    bus.publish_nowait(ev.UserInput(text="x"))
    bus.publish_nowait(ev.UserInput(text="x"))
    sub = bus.open_subscription(after=0)  # replays from the log...
    bus.publish_nowait(ev.UserInput(text="x"))  # ...which trims seq 1 before it is read
    with pytest.raises(trio.BrokenResourceError) as info:
        await sub.receive()
    assert isinstance(info.value, errors.LogTrimmed)
    assert str(info.value) == (
        "events after seq 0 were trimmed from the log; the oldest seq still held is 2"
    )


async def test_a_closed_session_is_closed() -> None:
    async with trio_agent.open_runtime() as runtime:
        session = await runtime.open_session("s1")
        await session.aclose()
        with pytest.raises(trio.ClosedResourceError, match=r"^session 's1' is closed$") as info:
            await session.send("hello")
        assert isinstance(info.value, errors.SessionClosed)
