"""The command line, run as users run it: ``trio-agent`` in a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from trio_agent.bench._llama_server import LlamaServer
from trio_agent.testing import ScriptBuilder
from trio_agent.transports import ServerLimits

pytestmark = pytest.mark.timeout(60)

TRIO_AGENT = [sys.executable, "-m", "trio_agent.cli"]


def run_cli(*args: str, timeout: float = 45) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRIO_AGENT, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_run_prints_every_event_as_a_json_line(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            ScriptBuilder()
            .turn(
                tokens=["Let me see."],
                tool_calls=[{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}],
            )
            .turn(tokens=["It is ", "42."])
            .build()
        )
    )
    result = run_cli("run", "--model", f"scripted:{script}", "--events", "jsonl", "what is 6*7?")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0] == {**events[0], "type": "user_input", "text": "what is 6*7?"}
    tool_result = next(e for e in events if e["type"] == "tool_result")
    assert (tool_result["status"], tool_result["result"]) == ("ok", 42)
    assert events[-1]["type"] == "done"
    assert (events[-1]["status"], events[-1]["text"]) == ("completed", "It is 42.")


def test_run_streams_the_text_and_exits_0(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(ScriptBuilder().turn(tokens=["Hello", ", ", "you"]).build()))
    result = run_cli("run", "--model", f"scripted:{script}", "--tools", "", "hi")
    assert (result.returncode, result.stdout) == (0, "Hello, you\n")


def test_run_fails_with_the_error_on_stderr() -> None:
    # Nothing listens on port 9 of loopback: the provider retries, then gives up.
    result = run_cli(
        "run", "--model", "openai:some-model", "--base-url", "http://127.0.0.1:9/v1", "hi"
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("trio-agent run: the run ended failed: connection: ")
    assert "127.0.0.1:9" in last


def test_run_refuses_bad_arguments() -> None:
    result = run_cli("run", "--tools", "calculator,teleport", "hi")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "trio-agent run: unknown tool(s) teleport; built-in tools: calculator, sleep"
    )
    result = run_cli("run", "--model", "bogus", "hi")
    assert result.returncode == 2
    assert "bogus" in result.stderr


def test_demo_shows_the_whole_story() -> None:
    result = run_cli("demo", "--speed", "4")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "▶ steer: Also, say hi to everyone watching!",
        "↳ ok: 35",
        "⏸ interrupted at step 2 (hard)",
        "↳ cancelled: hard interrupt: the nap is taking too long",
        "▶ resume: Skip the nap and wrap up.",
        "■ done (completed)",
        "event timeline",
        "final state",
    ):
        assert expected in out, expected
    # The step after the steering message had it in its input.
    assert "step 2: thinking… (newest user message in its input: 'Also, say hi" in out.replace(
        "\n", ""
    ).replace("  ", " ")


def test_demo_plays_the_story_on_a_real_model(llama_server: LlamaServer) -> None:
    result = run_cli(
        "demo",
        *("--model", "openai:smollm2", "--base-url", llama_server.base_url),
        *("--max-tokens", "24", "--speed", "4"),
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.replace("\n", " ")
    assert f"an agent run on openai:smollm2 at {llama_server.base_url}" in out
    for expected in (
        "Also, say hi to everyone watching!",  # the steering message (or a new run)
        "⏸ interrupt (hard): cut mid-answer",
        "▶ resume: Skip the nap and wrap up.",
        "■ done (completed)",
        "final state",
    ):
        assert expected in out, expected
    assert re.search(r"⏸ interrupted at step \d \(hard\)", out)
    usage = re.search(r"usage=\{'input_tokens': (\d+), 'output_tokens': (\d+)\}", out)
    assert usage and int(usage[1]) > 0 and int(usage[2]) > 0  # counted by the server


def test_run_caps_a_real_models_answer_with_max_tokens(llama_server: LlamaServer) -> None:
    result = run_cli(
        "run",
        *("--model", "openai:smollm2", "--base-url", llama_server.base_url),
        *("--max-tokens", "2", "--tools", "", "--events", "jsonl"),
        "Write a long poem about rivers.",
    )
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert (done["type"], done["status"], done["finish_reason"]) == ("done", "completed", "length")
    assert done["usage"]["output_tokens"] == 2


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_tokens_must_be_a_positive_number(value: str) -> None:
    result = run_cli("run", "--model", "openai:m", "--max-tokens", value, "hi")
    assert result.returncode == 2
    problem = (
        "expected a whole number, got 'many'"
        if value == "many"
        else f"must be at least 1, not {value}"
    )
    assert result.stderr.endswith(f"trio-agent run: error: argument --max-tokens: {problem}\n")


def test_a_scripted_model_takes_no_max_tokens() -> None:
    result = run_cli("demo", "--max-tokens", "5")
    assert result.returncode == 2
    assert result.stderr == (
        "trio-agent demo: model spec 'scripted' is a scripted model: it takes no base URL, "
        "API key or max_tokens\n"
    )


def test_serve_help_has_a_flag_for_every_limit() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    # Each option's help, whitespace folded (argparse wraps it), by its flag.
    blocks = re.split(r"\n  (?=--)", result.stdout)[1:]
    helps = {block.split()[0]: " ".join(block.split()[2:]) for block in blocks}
    defaults = ServerLimits()
    for field in attrs.fields(ServerLimits):
        flag = "--" + field.name.replace("_", "-")
        assert flag in helps, f"serve --help has no {flag} for ServerLimits.{field.name}"
        default = getattr(defaults, field.name)
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        text, _, end = helps[flag].rpartition(" (default: ")
        assert end.startswith(f"{shown})"), (flag, helps[flag])
        assert len(text.split()) >= 5, f"{flag}: no help from the field's docstring"
    # The help is the first sentence of the field's docstring.
    assert helps["--max-connections"].startswith(
        "clients at once (WebSockets, SSE and AG-UI streams), over all sessions (default: 256)"
    )
    assert helps["--command-burst"].startswith(
        "the bucket's size: commands one connection may send at once (default: 40)"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--max-connections", "0"],
            "argument --max-connections: ServerLimits.max_connections must be a positive "
            "number, got 0",
        ),
        (
            ["--stall-timeout", "inf"],
            "argument --stall-timeout: ServerLimits.stall_timeout must be a positive number, "
            "got inf",
        ),
        (["--max-sessions", "1.5"], "argument --max-sessions: expected an integer, got '1.5'"),
        (
            ["--session-idle-timeout", "soon"],
            "argument --session-idle-timeout: expected a number, got 'soon'",
        ),
    ],
)
def test_serve_refuses_a_bad_limit_naming_its_flag(argv: list[str], message: str) -> None:
    result = run_cli("serve", "--port", "0", *argv)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"trio-agent serve: error: {message}"


def _calculator_script(tmp_path: Path) -> str:
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            ScriptBuilder()
            .turn(
                tool_calls=[{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}}]
            )
            .turn(tokens=["Done."])
            .build()
        )
    )
    return f"scripted:{script}"


def test_run_denies_a_call_that_needs_approval_when_nobody_can_answer(tmp_path: Path) -> None:
    # stdin is not a terminal here (as in a pipeline): the call is denied, with a reason
    # that says why, and the run goes on to its end.
    from trio_agent.cli.run import NOBODY_TO_ASK

    model = _calculator_script(tmp_path)
    result = run_cli("run", "--model", model, "--approve", "calculator", "--events", "jsonl", "x")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert "tool_approval_requested" in kinds
    approval = next(e for e in events if e["type"] == "tool_approval")
    assert (approval["approved"], approval["reason"]) == (False, NOBODY_TO_ASK)
    result_ = next(e for e in events if e["type"] == "tool_result")
    assert (result_["status"], result_["error"]) == ("denied", f"denied: {NOBODY_TO_ASK}")
    assert events[-1]["status"] == "completed"


@pytest.mark.parametrize(("answer", "status"), [("y", "ok"), ("no thanks", "denied")])
def test_run_asks_on_a_terminal(tmp_path: Path, answer: str, status: str) -> None:
    # A pseudo-terminal as stdin: the question goes to stderr, the answer decides.
    import os
    import pty

    model = _calculator_script(tmp_path)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*TRIO_AGENT, "run", "--model", model, "--approve", "calculator", "--events", "jsonl", "x"],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    try:
        assert proc.stderr is not None
        asked = b""
        while b"run it?" not in asked:
            chunk = proc.stderr.read1(4096)  # the question, before any answer
            assert chunk, "trio-agent run exited without asking"
            asked += chunk
        assert b'calculator with {"expression":"6*7"}' in asked
        os.write(controller, answer.encode() + b"\n")
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(controller)
        proc.kill()
    events = [json.loads(line) for line in out.decode().splitlines()]
    result_ = next(e for e in events if e["type"] == "tool_result")
    assert result_["status"] == status
    if status == "denied":
        assert result_["error"] == "denied: no thanks"


def test_approve_must_name_an_offered_tool() -> None:
    result = run_cli("run", "--approve", "rm", "x")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "trio-agent run: --approve names tool(s) rm that are not offered; tools: calculator, sleep"
    )


MCP_SERVER = Path(__file__).with_name("mcp_server.py")


def mcp_command(name: str) -> str:
    return f"{sys.executable} {MCP_SERVER} --name {name}"


def test_run_offers_the_tools_of_each_mcp_server(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    calls = [
        {"id": "c1", "name": "one_add", "arguments": {"a": 1, "b": 2}},
        {"id": "c2", "name": "two_add", "arguments": {"a": 3, "b": 4}},
        {"id": "c3", "name": "calculator", "arguments": {"expression": "6*7"}},
    ]
    script.write_text(
        json.dumps(ScriptBuilder().turn(tool_calls=calls).turn(tokens=["ok"]).build())
    )
    result = run_cli(
        "run",
        "--model",
        f"scripted:{script}",
        "--events",
        "jsonl",
        "--mcp",
        mcp_command("one"),
        "--mcp",
        mcp_command("two"),
        "--approve",
        "two_add",
        "go",
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    got = {e["call_id"]: e for e in events if e["type"] == "tool_result"}
    assert (got["c1"]["status"], got["c1"]["result"]) == ("ok", {"result": 3})
    assert got["c2"]["status"] == "denied"  # --approve, and nobody at a terminal
    assert (got["c3"]["status"], got["c3"]["result"]) == ("ok", 42)


@pytest.mark.parametrize("command", ["run", "serve"])
def test_mcp_servers_are_checked_before_anything_runs(command: str) -> None:
    port = ["--port", "0"] if command == "serve" else []
    tail = ["hi"] if command == "run" else []
    result = run_cli(command, *port, "--mcp", "/nonexistent/mcp-server", *tail)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"trio-agent {command}: MCP server '/nonexistent/mcp-server' could not be started: "
        "FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent/mcp-server'"
    )
    result = run_cli(command, *port, "--mcp", mcp_command("one"), "--approve", "nope", *tail)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"trio-agent {command}: approval names the tool 'nope', which the runtime does not "
        "have; its tools: 'calculator', 'sleep', 'add', 'lines'"
    )
    result = run_cli(command, *port, "--mcp", "'unclosed", *tail)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"trio-agent {command}: --mcp \"'unclosed\": can't read the MCP server command "
        '"\'unclosed": No closing quotation'
    )
