"""``trio-agent bench``: run the benchmark suite and write a report with plots.

``trio-agent bench [--quick] [--only NAME ...] [--out DIR]`` (or ``python -m
trio_agent.bench ...``) imports the benchmark modules listed in
:data:`trio_agent.bench.BENCHMARKS` — the subpackage of the installed ``trio_agent``,
never a ``benchmarks`` package that happens to sit in the current directory — runs them
with a progress bar, and writes to ``DIR`` (default ``bench-results``):

- ``results.json`` — the machine (CPU, cores, OS), Python and the versions of the
  libraries that matter, then every figure with its samples (min/median/max), its
  baselines, ratios and targets;
- ``results.md`` — one table per benchmark: figure, ours, each baseline, ratios, targets;
- PNG plots (matplotlib, Agg): throughput against the baselines, latency percentiles,
  memory over time under a stalled subscriber, the per-event cost breakdown.

Each benchmark module has ``NAME``, ``TITLE``, ``run(quick, progress) -> list[Figure]``
and optionally what it needs beyond the base install:

- ``REQUIRES = {"websockets": "bench"}`` — importable module → the extra of trio-agent
  that installs it;
- ``PROGRAMS = {"redis-server": "apt-get install redis-server"}`` — a program looked up
  on ``PATH`` → how to install it.

A benchmark whose requirement is missing is skipped with a message that says what to
install (``pip install 'trio-agent[bench]'``); modules import their optional
dependencies inside the functions that use them, so the runner itself starts on the base
install.  Without matplotlib the plots are skipped with the same kind of message.

Exit status: 0 when every selected benchmark ran or was skipped for a missing optional
dependency, 1 when one failed, 2 for bad usage (an unknown benchmark name).  No
thresholds are asserted: a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Final

from . import BENCHMARKS
from ._common import install_hint
from .report import Json, machine, plot, render_markdown, summary

__all__ = ["DEFAULT_OUT", "DESCRIPTION", "add_arguments", "main", "run"]

DEFAULT_OUT: Final = "bench-results"
"""Where the report goes without ``--out`` (relative to the current directory)."""

PLOT_EXTRA: Final = "bench"
"""The extra that installs matplotlib, which draws the plots."""


# ---- loading a benchmark and checking what it needs ---------------------------------


@dataclass(frozen=True)
class Bench:
    """One benchmark module as the runner sees it."""

    name: str
    module: ModuleType | None
    problem: str | None = None
    """Why it can't run (``None``: it can)."""
    skipped: bool = False
    """True: a missing optional dependency (skipped), not a failure."""

    @property
    def title(self) -> str:
        return str(getattr(self.module, "TITLE", self.name))


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package; a module set to None
        return False


def _declared(module: ModuleType, attribute: str) -> Mapping[str, str]:
    value = getattr(module, attribute, {})
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{module.__name__}.{attribute} must map names to what installs them "
            f"(a dict), not {type(value).__name__}"
        )
    return value


def missing_requirements(module: ModuleType) -> str | None:
    """What ``module`` needs and is not installed, as a message that says what to
    install; ``None`` when nothing is missing."""
    by_extra: dict[str, list[str]] = {}
    for name, extra in _declared(module, "REQUIRES").items():
        if not _importable(name):
            by_extra.setdefault(extra, []).append(name)
    problems = [
        # (an extra's name, or the command itself when it is not one: it has a space)
        f"needs {', '.join(names)}, not installed "
        f"({extra if ' ' in extra else install_hint(extra)})"
        for extra, names in by_extra.items()
    ]
    for program, how in _declared(module, "PROGRAMS").items():
        if shutil.which(program) is None:
            problems.append(f"needs the program {program!r}, not on PATH ({how})")
    return "; ".join(problems) or None


def load(name: str) -> Bench:
    """Import ``trio_agent.bench.<name>`` and check what it needs."""
    qualified = f"{__package__}.{name}"
    try:
        module = importlib.import_module(qualified)
    except ImportError as exc:
        return Bench(
            name,
            None,
            f"can't import {qualified}: {exc} (a benchmark imports its optional "
            "dependencies inside the functions that use them, and declares them in REQUIRES)",
        )
    try:
        missing = missing_requirements(module)
    except TypeError as exc:
        return Bench(name, module, str(exc))
    if missing is not None:
        return Bench(name, module, missing, skipped=True)
    return Bench(name, module)


# ---- running -----------------------------------------------------------------------


DESCRIPTION: Final = "Run the benchmark suite (ours and the baselines, in the same run)."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trio-agent bench", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options (``--quick``, ``--only``, ``--out``), on ``parser``: its own,
    or the ``bench`` subcommand's of ``trio-agent``."""
    parser.add_argument("--quick", action="store_true", help="fewer events and runs (smoke)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", default=None, help="run only these benchmarks"
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"where to write the report (default: {DEFAULT_OUT})",
    )


def _run_one(bench: Bench, quick: bool, progress: Callable[[str], None]) -> Json:
    entry: Json = {"name": bench.name, "title": bench.title, "figures": [], "seconds": 0.0}
    if bench.problem is not None:
        entry.update(status="skipped" if bench.skipped else "failed", message=bench.problem)
        return entry
    assert bench.module is not None
    t0 = time.perf_counter()
    try:
        figures = bench.module.run(quick, progress)
    except Exception as exc:
        entry.update(
            status="failed",
            message=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
    else:
        entry.update(status="ok", message="", figures=[f.to_dict() for f in figures])
    entry["seconds"] = time.perf_counter() - t0
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks and write the report; returns the exit status."""
    return run(_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """:func:`main` with its arguments parsed (by a parser :func:`add_arguments` made)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    names = list(args.only) if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        console.print(
            f"[red]trio-agent bench:[/] unknown benchmark(s) {escape(', '.join(unknown))}; "
            f"available: {', '.join(BENCHMARKS)}"
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    benches = [load(n) for n in names]
    command = (
        "trio-agent bench"
        + (" --quick" if args.quick else "")
        + (f" --only {' '.join(args.only)}" if args.only else "")
    )
    results: Json = {
        "command": command,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "benchmarks": [],
    }
    with Progress(
        TextColumn("[bold]{task.fields[bench]:<10}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("", total=len(benches), bench="")
        for bench in benches:
            bar.update(task, bench=bench.name, description=bench.title)

            def progress(what: str, name: str = bench.name) -> None:
                bar.update(task, description=what)
                if os.environ.get("BENCH_VERBOSE"):
                    bar.console.log(f"{name}: {what}")

            entry = _run_one(bench, args.quick, progress)
            results["benchmarks"].append(entry)
            if entry["status"] == "ok":
                bar.console.print(f"[green]✓[/] {bench.name} ({entry['seconds']:.1f} s)")
            elif entry["status"] == "skipped":
                bar.console.print(f"[yellow]skipped[/] {bench.name}: {escape(entry['message'])}")
            else:
                bar.console.print(f"[red]failed[/] {bench.name}: {escape(entry['message'])}")
                if "traceback" in entry:
                    bar.console.print(entry["traceback"], markup=False, highlight=False)
            bar.advance(task)

    try:
        results["plots"] = plot(results, out)
    except ImportError:
        results["plots"] = []
        console.print(
            f"[yellow]plots skipped:[/] matplotlib is not installed "
            f"({escape(install_hint(PLOT_EXTRA))})"
        )
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(render_markdown(results))
    summary(console, results)
    console.print(
        f"report: {out / 'results.md'}, {out / 'results.json'}"
        + "".join(f", {out / p}" for p in results["plots"])
    )
    return 1 if any(b["status"] == "failed" for b in results["benchmarks"]) else 0
