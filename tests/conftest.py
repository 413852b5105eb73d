"""Test-suite set-up: hypothesis profiles, no skipping in CI, the llama.cpp servers.

Profiles: ``dev`` (fast, the default) and ``ci`` (thorough), chosen by ``CI=true``;
``HYPOTHESIS_PROFILE`` overrides both.  With ``CI=true`` a skipped test (or a skipped
module) is reported as a failure: a test that does not run proves nothing.

``llama_server`` and ``llama_tools_server`` are real llama.cpp servers with SmolLM2
(:mod:`trio_agent.bench._llama_server`), one each for the whole session, started by the
first test that asks for one and stopped at the end: the model's own chat template, and
the template with which ``tool_choice: "required"`` forces a call.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from trio_agent.bench._llama_server import LlamaServer, LlamaServerMissing

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1")

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "dev"))


def _fail_skip(report: Any) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped with CI=true (nothing may skip in CI): {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_skip(report)
    return report


def _llama(tools: bool) -> Iterator[LlamaServer]:
    try:
        server = LlamaServer(tools=tools)
    except LlamaServerMissing as exc:
        if IN_CI:
            pytest.fail(f"CI=true and {exc}")
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """llama.cpp serving SmolLM2 with the model's own chat template."""
    yield from _llama(tools=False)


@pytest.fixture(scope="session")
def llama_tools_server() -> Iterator[LlamaServer]:
    """llama.cpp serving SmolLM2 with ``smollm2-tools.jinja`` (tool calls it can force)."""
    yield from _llama(tools=True)
