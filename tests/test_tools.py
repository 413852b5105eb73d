"""Tools: the decorator and its schemas, the registry, execute_tool, the demo tools."""

from __future__ import annotations

import threading
from typing import Any, Literal, Optional

import pytest
import trio
import trio.testing

from trio_agent.models import ToolSpec
from trio_agent.tools import (
    DEMO_TOOLS,
    MAX_CALC_BITS,
    MAX_CALC_NESTING,
    MAX_EXPRESSION_CHARS,
    MAX_RESULT_BYTES,
    Tool,
    ToolOutcome,
    ToolRegistry,
    calculator,
    execute_tool,
    sleep,
    tool,
)

pytestmark = pytest.mark.timeout(10)

TIMEOUT = 30.0


@tool
async def search(
    query: str,
    limit: int = 5,
    tags: list[str] | None = None,
    mode: Literal["fast", "deep"] = "fast",
    weights: dict[str, float] | None = None,
    exact: bool = False,
    ratio: Optional[float] = None,  # noqa: UP045 - the old spelling must work too
    pairs: list[list[int]] = [],  # noqa: B006 - a default the schema shows
    options: dict = {},  # type: ignore[type-arg]  # noqa: B006
) -> dict[str, Any]:
    """Search the index.

    This paragraph is for humans only.
    """
    return {"query": query, "limit": limit}


def test_schema_is_derived_from_the_signature() -> None:
    assert search.name == "search"
    assert search.description == "Search the index."
    assert search.is_async and search.timeout is None
    assert search.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer", "default": 5},
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
            },
            "mode": {"enum": ["fast", "deep"], "default": "fast"},
            "weights": {
                "anyOf": [
                    {"type": "object", "additionalProperties": {"type": "number"}},
                    {"type": "null"},
                ],
                "default": None,
            },
            "exact": {"type": "boolean", "default": False},
            "ratio": {"type": ["number", "null"], "default": None},
            "pairs": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer"}},
                "default": [],
            },
            "options": {"type": "object", "default": {}},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    assert search.spec == ToolSpec("search", "Search the index.", search.parameters)


def test_decorator_with_arguments_and_sync_functions() -> None:
    @tool(name="add_up", description="Adds.", timeout=2.5)
    def add(a: int, b: int) -> int:
        """Ignored: the description is given."""
        return a + b

    assert (add.name, add.description, add.is_async, add.timeout) == ("add_up", "Adds.", False, 2.5)
    assert add(a=1, b=2) == 3  # the tool still calls like its function
    custom = {"type": "object", "properties": {"x": {"type": "integer", "minimum": 1}}}

    def ident(x):  # type: ignore[no-untyped-def]  # a given schema needs no hints
        return x

    given = tool(schema=custom)(ident)
    assert (given.name, given.parameters, given.description) == ("ident", custom, "")
    with pytest.raises(
        ValueError,
        match=r"^tool 'ident': parameters are not a valid JSON "
        r"schema: 'thing' is not valid under any of the given schemas$",
    ):
        tool(schema={"type": "thing"})(ident)


def test_unsupported_annotations_fail_at_decoration_naming_the_parameter() -> None:
    with pytest.raises(
        TypeError,
        match=r"^parameter 'when' of .*\.f: unsupported annotation "
        r"<class 'complex'>; use str, int, float, bool, list\[\.\.\.\], dict, "
        r"Literal\[\.\.\.\] or X \| None$",
    ):

        @tool
        def f(x: int, when: complex) -> None: ...

    with pytest.raises(TypeError, match=r"^parameter 'x' of .*\.g has no type annotation$"):

        @tool
        def g(x) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(
        TypeError,
        match=r"^parameter 'rest' of .*\.h: \*args and \*\*kwargs "
        r"can't be described to a model; name each parameter$",
    ):

        @tool
        def h(**rest: int) -> None: ...

    with pytest.raises(
        TypeError,
        match=r"^parameter 'm' of .*\.i: unsupported annotation "
        r"dict\[int, str\]: JSON object keys are strings$",
    ):

        @tool
        def i(m: dict[int, str]) -> None: ...


def test_bad_names_and_timeouts_are_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^tool name 'has space' is not allowed: use 1 to 64 "
        r"letters, digits, '_' or '-'$",
    ):
        tool(name="has space")(lambda: None)
    with pytest.raises(
        ValueError,
        match=r"^tool 'f': timeout must be a positive number of "
        r"seconds, got 0$",
    ):

        @tool(timeout=0)
        async def f() -> None: ...


def test_registry_rejects_duplicates_and_non_tools() -> None:
    @tool(name="calculator", description="another")
    def other(expression: str) -> int:
        return 0

    with pytest.raises(
        ValueError,
        match=r"^two tools are named 'calculator'; give one another "
        r"name with @tool\(name=\.\.\.\)$",
    ):
        ToolRegistry([calculator, other])
    with pytest.raises(
        TypeError,
        match=r"is not a Tool; decorate the function with "
        r"@trio_agent\.tool$",
    ):
        ToolRegistry([len])  # type: ignore[list-item]
    registry = ToolRegistry(DEMO_TOOLS)
    assert registry.get("sleep") is sleep and registry.get("nope") is None
    assert registry.specs() == (calculator.spec, sleep.spec)
    assert registry.names() == ("calculator", "sleep")


# ---- execute_tool ---------------------------------------------------------------------


@tool
async def echo(text: str, times: int = 1) -> str:
    """Repeat text."""
    return text * times


@tool
def fails(message: str) -> None:
    """Raise."""
    raise KeyError(message)


@tool
async def returns_set() -> Any:
    """Not JSON."""
    return {1, 2}


@tool
async def returns_tuple() -> Any:
    """JSON once normalised."""
    return (1, "a")


@tool
async def returns_too_much() -> str:
    """Too big."""
    return "x" * MAX_RESULT_BYTES


@tool(timeout=2)
async def slow() -> None:
    """Sleeps past its own timeout."""
    await trio.sleep(100)


@tool
async def own_deadline() -> None:
    """Its own fail_after fires: an error, not the call's timeout."""
    with trio.fail_after(1):
        await trio.sleep(10)


@tool(timeout=2)
async def fails_as_it_times_out() -> None:
    """Runs two tasks; the call's deadline cancels both, and one fails on its way out:
    an exception group of that error and the other's ``Cancelled``."""

    async def sleeps() -> None:
        await trio.sleep(100)

    async def fails_when_cancelled() -> None:
        try:
            await trio.sleep(100)
        finally:
            raise RuntimeError("cleanup failed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeps)
        nursery.start_soon(fails_when_cancelled)


REGISTRY = ToolRegistry(
    [
        echo,
        fails,
        returns_set,
        returns_tuple,
        returns_too_much,
        slow,
        own_deadline,
        fails_as_it_times_out,
        *DEMO_TOOLS,
    ]
)


async def run(name: str, arguments: dict[str, Any], **kw: Any) -> ToolOutcome:
    limiter = kw.pop("limiter", None) or trio.CapacityLimiter(4)
    registry = kw.pop("registry", REGISTRY)
    return await execute_tool(
        registry, name, arguments, limiter=limiter, timeout=kw.pop("timeout", TIMEOUT)
    )


async def test_ok_outcome() -> None:
    assert await run("echo", {"text": "ab", "times": 2}) == ToolOutcome("ok", "abab")
    assert await run("returns_tuple", {}) == ToolOutcome("ok", [1, "a"])


async def test_unknown_tool_names_it_and_lists_the_known_ones() -> None:
    registry = ToolRegistry(DEMO_TOOLS)
    assert await run("calc", {}, registry=registry) == ToolOutcome(
        "error", None, "unknown tool 'calc'; known tools: 'calculator', 'sleep'"
    )
    assert (await run("x", {}, registry=ToolRegistry())).error == (
        "unknown tool 'x'; known tools: none"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "invalid arguments for tool 'echo' at $: 'text' is a required property"),
        ({"text": 5}, "invalid arguments for tool 'echo' at $.text: 5 is not of type 'string'"),
        (
            {"text": "a", "times": 1.5},
            "invalid arguments for tool 'echo' at $.times: 1.5 is not of type 'integer'",
        ),
        (
            {"text": "a", "times": True},
            "invalid arguments for tool 'echo' at $.times: True is not of type 'integer'",
        ),
        (
            {"text": "a", "loud": True},
            "invalid arguments for tool 'echo' at $: Additional properties are not allowed "
            "('loud' was unexpected)",
        ),
    ],
)
async def test_arguments_are_validated_before_the_call(
    arguments: dict[str, Any], message: str
) -> None:
    assert await run("echo", arguments) == ToolOutcome("error", None, message)


async def test_sleep_bounds_are_in_its_schema_and_its_body() -> None:
    outcome = await run("sleep", {"seconds": -1})
    assert outcome.error == (
        "invalid arguments for tool 'sleep' at $.seconds: -1 is less than the minimum of 0"
    )
    outcome = await run("sleep", {"seconds": 3601})
    assert outcome.error == (
        "invalid arguments for tool 'sleep' at $.seconds: 3601 is greater than the maximum "
        "of 3600.0"
    )
    with pytest.raises(ValueError, match=r"^seconds must be between 0 and 3600, got -0\.5$"):
        await sleep(seconds=-0.5)


async def test_exceptions_become_error_outcomes() -> None:
    # A sync tool: no autojump_clock here, or the virtual clock could jump to the
    # call's deadline while the worker thread runs.
    assert await run("fails", {"message": "boom"}) == ToolOutcome("error", None, "KeyError: 'boom'")


async def test_a_tools_own_deadline_is_an_error_not_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(1000):
        outcome = await run("own_deadline", {}, timeout=TIMEOUT)
    assert outcome == ToolOutcome("error", None, "TooSlowError")


async def test_a_tool_failing_as_its_deadline_cancels_it_is_an_error_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What a tool raises as the call's deadline cancels it comes back as its error (the
    ``Cancelled`` of its own tasks taken out by the deadline's scope), never out of
    ``execute_tool``."""
    with trio.fail_after(1000):
        outcome = await run("fails_as_it_times_out", {}, timeout=TIMEOUT)
    assert outcome == ToolOutcome("error", None, "RuntimeError: cleanup failed")


async def test_results_that_are_not_json_or_too_big_are_errors() -> None:
    assert await run("returns_set", {}) == ToolOutcome(
        "error",
        None,
        "tool 'returns_set' returned a value that is not JSON: Type is not JSON serializable: set",
    )
    outcome = await run("returns_too_much", {})
    assert outcome.error == (
        f"tool 'returns_too_much' returned {MAX_RESULT_BYTES + 2} bytes of JSON; the limit is "
        f"{MAX_RESULT_BYTES} (MAX_RESULT_BYTES)"
    )


async def test_timeout_status_gives_the_seconds(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        start = trio.current_time()
        assert await run("sleep", {"seconds": 50}, timeout=7.5) == ToolOutcome(
            "timeout", None, "tool 'sleep' timed out after 7.5 seconds"
        )
        assert trio.current_time() - start == pytest.approx(7.5)
        # A tool's own timeout wins over the runtime's.
        assert await run("slow", {}, timeout=1000) == ToolOutcome(
            "timeout", None, "tool 'slow' timed out after 2 seconds"
        )
        assert await run("sleep", {"seconds": 3}) == ToolOutcome("ok", {"slept": 3})


async def test_cancel_propagates_from_a_sync_tool_without_waiting_for_its_thread() -> None:
    release, entered, left = threading.Event(), threading.Event(), threading.Event()

    @tool
    def blocking() -> str:
        """Blocks its thread until released."""
        entered.set()
        release.wait(5)
        left.set()
        return "released"

    registry = ToolRegistry([blocking])
    outcomes: list[ToolOutcome] = []
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    outcomes.append(await run("blocking", {}, registry=registry))

                nursery.start_soon(call)
                await trio.to_thread.run_sync(entered.wait)
                nursery.cancel_scope.cancel()
            # The nursery exited: the call ended while its thread is still blocked.
            assert outcomes == []  # Cancelled propagated: no outcome was made of it
            assert not left.is_set()
    finally:
        release.set()
    await trio.to_thread.run_sync(left.wait, 5)
    assert left.is_set()


async def test_sync_tool_times_out_without_waiting_for_its_thread() -> None:
    release, left = threading.Event(), threading.Event()

    @tool(timeout=0.05)
    def blocking() -> str:
        """Blocks its thread until released."""
        release.wait(5)
        left.set()
        return "released"

    try:
        with trio.fail_after(5):
            outcome = await run("blocking", {}, registry=ToolRegistry([blocking]))
        assert outcome == ToolOutcome(
            "timeout", None, "tool 'blocking' timed out after 0.05 seconds"
        )
        assert not left.is_set()
    finally:
        release.set()


async def test_limiter_bounds_concurrency() -> None:
    gate = trio.Event()
    running = 0
    most = 0

    @tool
    async def wait_gate(n: int) -> int:
        """Waits for the gate."""
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return n

    registry = ToolRegistry([wait_gate])
    limiter = trio.CapacityLimiter(2)
    results: list[ToolOutcome] = []

    async def call(n: int) -> None:
        results.append(await run("wait_gate", {"n": n}, registry=registry, limiter=limiter))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(call, n)
            await trio.testing.wait_all_tasks_blocked()
            stats = limiter.statistics()
            assert (stats.borrowed_tokens, stats.tasks_waiting) == (2, 3)
            assert running == 2
            gate.set()
    assert most == 2
    assert sorted(r.result for r in results) == [0, 1, 2, 3, 4]
    assert limiter.statistics().borrowed_tokens == 0


def test_outcome_values_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^a 'ok' tool outcome takes no error$"):
        ToolOutcome("ok", 1, "x")
    with pytest.raises(ValueError, match=r"^a 'timeout' tool outcome needs an error$"):
        ToolOutcome("timeout")
    assert isinstance(calculator, Tool)


# ---- calculator -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("(2+3)*7", 35),
        ("2 ** 10", 1024),
        ("-3 + -(-2)", -1),
        ("+4", 4),
        ("7 / 2", 3.5),
        ("6 × 7", 42),
        ("9 ÷ 3", 3.0),
        ("1.5 * 4", 6.0),
        ("2 ** -1", 0.5),
        ("2 ** 3 ** 2", 512),
        ("2 ** 64", 18446744073709551616.0),  # too wide for JSON: a float
        ("  1e3 ", 1000.0),
    ],
)
async def test_calculator(expression: str, value: float) -> None:
    result = await calculator(expression=expression)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "can't evaluate '1/0': division by zero"),
        ("0 ** -1", "can't evaluate '0 \\*\\* -1': division by zero"),
        (
            "9**9**9",
            f"can't evaluate '9\\*\\*9\\*\\*9': the result is too large \\(over "
            f"{MAX_CALC_BITS} bits\\)",
        ),
        (
            "2 ** 1024",
            f"can't evaluate '2 \\*\\* 1024': the result is too large \\(over "
            f"{MAX_CALC_BITS} bits\\)",
        ),
        ("10.0 ** 400", "can't evaluate '10\\.0 \\*\\* 400': the result is too large"),
        ("(-8) ** 0.5", "can't evaluate '\\(-8\\) \\*\\* 0\\.5': the result is not a real number"),
        ("2 +", "can't parse '2 \\+': invalid syntax"),
        ("", "the expression is empty"),
        (
            "__import__('os')",
            "can't evaluate \"__import__\\('os'\\)\": Call is not allowed: only "
            "numbers, \\+ - \\* / \\*\\* and \\(\\)",
        ),
        (
            "x + 1",
            "can't evaluate 'x \\+ 1': Name is not allowed: only numbers, \\+ - \\* / "
            "\\*\\* and \\(\\)",
        ),
        ("7 // 2", "can't evaluate '7 // 2': the operator // is not supported"),
        ("~1", "can't evaluate '~1': the operator ~ is not supported"),
        ("'a' * 3", "can't evaluate \"'a' \\* 3\": 'a' is not a number"),
        ("True + 1", "can't evaluate 'True \\+ 1': True is not a number"),
        ("1j", "can't evaluate '1j': 1j is not a number"),
    ],
)
async def test_calculator_errors(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        await calculator(expression=expression)


async def test_calculator_bounds_nesting() -> None:
    expression = "-" * (MAX_CALC_NESTING + 1) + "1"
    with pytest.raises(
        ValueError,
        match=rf"^can't evaluate '-+1': the expression nests more "
        rf"than {MAX_CALC_NESTING} levels deep$",
    ):
        await calculator(expression=expression)
    assert await calculator(expression="-" * (MAX_CALC_NESTING - 2) + "1") == 1


async def test_calculator_bounds_the_expression_length() -> None:
    with pytest.raises(
        ValueError,
        match=rf"^the expression is {MAX_EXPRESSION_CHARS + 1} "
        rf"characters long; the limit is {MAX_EXPRESSION_CHARS}$",
    ):
        await calculator(expression="1" * (MAX_EXPRESSION_CHARS + 1))


async def test_calculator_errors_reach_the_model_as_outcomes() -> None:
    assert await run("calculator", {"expression": "1/0"}) == ToolOutcome(
        "error", None, "ValueError: can't evaluate '1/0': division by zero"
    )
    assert await run("calculator", {"expression": "(2+3)*7"}) == ToolOutcome("ok", 35)


# ---- tools that take their call's context -----------------------------------------------


async def _steps(arguments: dict[str, Any], context: Any) -> ToolOutcome:
    """A tool that reports progress through its context, and says what it was given."""
    for i in range(arguments["n"]):
        await context.progress(i + 1, arguments["n"], f"step {i + 1}")
        await trio.sleep(1)
    if arguments.get("fail"):
        return ToolOutcome.failed("it did not work")
    return ToolOutcome("ok", {"call_id": context.call_id, "n": arguments["n"]})


STEPS = Tool(
    name="steps",
    description="Steps, reporting progress.",
    parameters={
        "$schema": "http://json-schema.org/draft-07/schema#",  # a server's own draft
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}, "fail": {"type": "boolean"}},
        "required": ["n"],
    },
    fn=_steps,
    is_async=True,
    takes_context=True,
)


async def test_a_tool_that_takes_its_context_reports_progress_as_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    import trio_agent
    from trio_agent import events as ev
    from trio_agent.testing import ScriptBuilder, check_invariants

    calls = [{"id": "c1", "name": "steps", "arguments": {"n": 3}}]
    script = ScriptBuilder().turn(tool_calls=calls).turn(tokens=["done"])
    async with trio_agent.open_runtime(model=script.model(), tools=[STEPS]) as rt:
        session = await rt.open_session("s1")
        async with session.subscribe(after=0) as events:
            await session.send("go")
            async for e in events:
                if e.type == "done":
                    break
    log = list(session.log)
    check_invariants(log, session.state)
    progress = [(e.progress, e.total, e.message) for e in log if isinstance(e, ev.ToolProgress)]
    assert progress == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]
    (result,) = [e for e in log if isinstance(e, ev.ToolResult)]
    assert (result.status, result.result) == ("ok", {"call_id": "c1", "n": 3})


async def test_a_context_tool_outside_a_session_gets_a_quiet_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = trio.CapacityLimiter(1)
    registry = ToolRegistry([STEPS])
    ok = await execute_tool(registry, "steps", {"n": 1}, limiter=limiter, timeout=TIMEOUT)
    assert ok == ToolOutcome("ok", {"call_id": "", "n": 1})
    failed = await execute_tool(
        registry, "steps", {"n": 1, "fail": True}, limiter=limiter, timeout=TIMEOUT
    )
    assert failed == ToolOutcome.failed("it did not work")
    # Validated with the draft its schema names (draft-07 here), as any tool's arguments.
    bad = await execute_tool(registry, "steps", {"n": 0}, limiter=limiter, timeout=TIMEOUT)
    assert bad == ToolOutcome.failed(
        "invalid arguments for tool 'steps' at $.n: 0 is less than the minimum of 1"
    )
    assert type(STEPS.validator).__name__ == "Draft7Validator"


def test_a_context_tool_is_async() -> None:
    with pytest.raises(ValueError, match=r"^tool 'x': a tool that takes its context is async$"):
        Tool(name="x", description="", parameters={}, fn=len, is_async=False, takes_context=True)


def test_an_approval_policy_keeps_its_overrides_when_the_tools_change() -> None:
    from trio_agent.tools import ApprovalPolicy

    first = ToolRegistry([STEPS, calculator])
    policy = ApprovalPolicy(first, {"steps": True})
    with pytest.raises(ValueError, match=r"^approval names the tool 'nope', which the runtime"):
        ApprovalPolicy(first, {"nope": True})
    asked = Tool(name="asked", description="", parameters={}, fn=len, is_async=False, approval=True)
    policy.update(ToolRegistry([calculator, asked]))  # steps went, asked came
    assert policy.needs("steps", {}) and policy.needs("asked", {})
    assert not policy.needs("calculator", {"expression": "1"})
