"""``trio-agent bench``: run the benchmark suite and write a report with plots.

``trio-agent bench [--quick] [--only NAME ...] [--out DIR]`` imports the benchmark
modules listed in ``benchmarks.BENCHMARKS`` (the ``benchmarks`` package at the root of
the repository: run the command from a checkout), runs them with a progress bar, and
writes to ``DIR`` (default ``bench-results``):

- ``results.json`` — the machine (CPU, cores, OS), Python and the versions of the
  libraries that matter, then every figure with its samples (min/median/max), its
  baselines, ratios and targets;
- ``results.md`` — one table per benchmark: figure, ours, each baseline, ratios, targets;
- PNG plots (matplotlib, Agg): throughput against the baselines, latency percentiles,
  memory over time under a stalled subscriber, the per-event cost breakdown.

Each benchmark module has ``NAME``, ``TITLE``, optionally ``REQUIRES`` (optional
distributions it needs: missing → the benchmark is skipped with a message) and
``run(quick, progress) -> list[Figure]``.  A new benchmark is a new module plus its
name in ``benchmarks.BENCHMARKS``.  Exit status: 0 when every selected benchmark ran or
was skipped for a missing optional dependency, 1 when one failed, 2 for bad usage.
No thresholds are asserted: a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Final

__all__ = ["main"]

DEFAULT_OUT: Final = "bench-results"
VERSIONED: Final = (
    "trio",
    "attrs",
    "orjson",
    "langgraph",
    "websockets",
    "matplotlib",
    "rich",
    "trio-agent",
)
"""Distributions whose versions go into ``results.json``."""

INSTALL_HINT: Final = "pip install 'trio-agent[bench]'"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent

Json = dict[str, Any]


# ---- finding the benchmarks -------------------------------------------------------------


class BenchSetupError(Exception):
    """The suite can't run at all (the message says why and what to do)."""


def _import_suite() -> ModuleType:
    """The ``benchmarks`` package, from the current directory or the checkout this
    module lives in."""
    try:
        return importlib.import_module("benchmarks")
    except ImportError:
        pass
    for root in (Path.cwd(), REPO_ROOT):
        if (root / "benchmarks" / "__init__.py").is_file() and str(root) not in sys.path:
            sys.path.insert(0, str(root))
    try:
        return importlib.import_module("benchmarks")
    except ImportError as exc:
        raise BenchSetupError(
            "can't find the benchmark suite (the 'benchmarks' package at the root of the "
            f"trio-agent repository): {exc}. Run 'trio-agent bench' from a checkout of "
            "the repository."
        ) from None


def _missing(module_names: Sequence[str]) -> list[str]:
    return [m for m in module_names if importlib.util.find_spec(m) is None]


class Bench:
    """One benchmark module as the runner sees it."""

    def __init__(
        self, name: str, module: ModuleType | None, problem: str | None, skipped: bool
    ) -> None:
        self.name = name
        self.module = module
        self.problem = problem  # why it can't run
        self.skipped = skipped  # True: a missing optional dependency, not a failure

    @property
    def title(self) -> str:
        return str(getattr(self.module, "TITLE", self.name))


def _load(name: str) -> Bench:
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ImportError as exc:
        missing = exc.name or ""
        optional = missing.split(".")[0] in {"langgraph", "websockets", "coredis", "redis"}
        what = (
            f"missing optional dependency {missing!r} ({INSTALL_HINT})"
            if optional
            else (f"can't import benchmarks.{name}: {exc}")
        )
        return Bench(name, None, what, skipped=optional)
    needs = _missing(tuple(getattr(module, "REQUIRES", ())))
    if needs:
        return Bench(name, module, f"needs {', '.join(needs)} ({INSTALL_HINT})", skipped=True)
    return Bench(name, module, None, skipped=False)


# ---- the machine -------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> Json:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": {d: _version(d) for d in VERSIONED},
    }


# ---- formatting ----------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "events/s":
        return f"{value:,.0f}/s"
    if unit == "tokens/s":
        return f"{value:,.0f} tokens/s"
    if unit == "KiB":
        return f"{value:.1f} KiB"
    if unit in ("ns/event",):
        return f"{value:,.0f} ns"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "µs/step":
        return f"{value:.1f} µs"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:,.4g} {unit}"


def _spread(stat: Json, unit: str) -> str:
    return f"{fmt(stat['value'], unit)} ({fmt(stat['min'], unit)}-{fmt(stat['max'], unit)})"


def _verdict(met: bool | None) -> str:
    return {True: "✅", False: "❌", None: "-"}[met]


def _table(figures: list[Json]) -> list[str]:
    labels: list[str] = []
    for f in figures:
        labels += [b for b in f["baselines"] if b not in labels]
    head = ["figure", "ours", *labels, "ratio", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in figures:
        unit = f["unit"]
        cells = [f["title"], _spread(f["ours"], unit)]
        cells += [_spread(f["baselines"][b], unit) if b in f["baselines"] else "" for b in labels]
        cells.append("<br>".join(f"{r:.2f}x {b}" for b, r in f["ratios"].items()))
        cells.append("<br>".join(f"{_verdict(t['met'])} {t['label']}" for t in f["targets"]))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def render_markdown(results: Json) -> str:
    m = results["machine"]
    lines = [
        "# trio-agent bench",
        "",
        f"`{results['command']}` — {results['started']} — "
        f"{'quick' if results['quick'] else 'full'} run",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        "",
        "Each cell: the headline value (median of the runs, or the pooled percentile), "
        "then min-max over the runs. Ratio = ours / baseline (throughput: higher is "
        "better; latency, memory and costs: lower is better).",
        "",
    ]
    for bench in results["benchmarks"]:
        lines.append(f"## {bench['name']} — {bench['title']}")
        lines.append("")
        if bench["status"] != "ok":
            lines += [f"*{bench['status']}: {bench['message']}*", ""]
            continue
        figures = bench["figures"]
        groups: dict[str, list[Json]] = {}
        for f in figures:  # one table per kind: throughput, costs, latency ...
            groups.setdefault(f["kind"], []).append(f)
        for group in groups.values():
            lines += _table(group)
        notes = [f"- *{f['title']}*: {f['notes']}" for f in figures if f["notes"]]
        lines += ["", *notes, "", f"({bench['seconds']:.1f} s)", ""]
    for plot in results.get("plots", []):
        lines.append(f"![{plot}]({plot})")
    return "\n".join(lines) + "\n"


# ---- plots -------------------------------------------------------------------------


def plot(results: Json, out: Path) -> list[str]:
    """Write the PNG plots; returns their file names.  Raises ImportError without
    matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [f for b in results["benchmarks"] if b["status"] == "ok" for f in b["figures"]]
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(name)

    def bars(ax: Any, f: Json) -> None:
        names = ["ours", *f["baselines"]]
        stats = [f["ours"], *f["baselines"].values()]
        values = [s["value"] for s in stats]
        err = [[s["value"] - s["min"] for s in stats], [s["max"] - s["value"] for s in stats]]
        colors = ["tab:green"] + ["tab:gray"] * (len(names) - 1)
        ax.barh(range(len(names)), values, xerr=err, color=colors, capsize=3)
        ax.set_yticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f["unit"])
        ax.set_title(f["title"], fontsize=10)
        for i, v in enumerate(values):
            ax.text(v, i, " " + fmt(v, f["unit"]), va="center", fontsize=7)

    throughput = [f for f in figures if f["kind"] in ("throughput", "overhead")]
    if throughput:
        fig, axes = plt.subplots(
            len(throughput), 1, figsize=(8, 2.2 + 1.6 * len(throughput)), squeeze=False
        )
        for ax, f in zip(axes[:, 0], throughput, strict=True):
            bars(ax, f)
        save(fig, "throughput.png")

    latency = [f for f in figures if f["kind"] == "latency" and f["percentiles"]]
    if latency:
        by_bench: dict[str, list[Json]] = {}
        for f in latency:  # one panel per benchmark: their scales differ by 100x
            by_bench.setdefault(f["benchmark"], []).append(f)
        fig, axes = plt.subplots(len(by_bench), 1, figsize=(8, 3.4 * len(by_bench)), squeeze=False)
        for ax, (bench, group) in zip(axes[:, 0], by_bench.items(), strict=True):
            _latency_panel(ax, bench, group)
        save(fig, "latency.png")

    memory = [f for f in figures if f["kind"] == "memory" and f["series"]]
    if memory:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, points in memory[0]["series"].items():
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        limits = [t["at_most"] for t in memory[0]["targets"] if t["at_most"]]
        if limits:
            ax.axhline(limits[0], color="tab:red", linestyle="--", label="target")
        ax.set_xlabel("events published")
        ax.set_ylabel("RSS growth (MiB)")
        ax.set_title("memory while one subscriber is stalled")
        ax.legend(fontsize=8)
        save(fig, "memory.png")

    per_item = [f for f in figures if f["kind"] == "memory" and not f["series"]]
    if per_item:
        fig, axes = plt.subplots(
            len(per_item), 1, figsize=(8, 1.6 + 1.4 * len(per_item)), squeeze=False
        )
        for ax, f in zip(axes[:, 0], per_item, strict=True):
            bars(ax, f)
            for t in f["targets"]:
                if t["at_most"]:
                    ax.axvline(t["at_most"], color="tab:red", linestyle="--", label=t["label"])
                    ax.legend(fontsize=7)
        save(fig, "memory_per_session.png")

    costs = [f for f in figures if f["kind"] == "cost"]
    if costs:
        fig, ax = plt.subplots(figsize=(8, 0.9 + 0.35 * len(costs)))
        values = [f["ours"]["value"] for f in costs]
        ax.barh(range(len(costs)), values, color="tab:blue")
        ax.set_yticks(
            range(len(costs)), [f["title"].removeprefix("cost: ") for f in costs], fontsize=8
        )
        ax.invert_yaxis()
        ax.set_xlabel("ns per event")
        ax.set_title("per-event cost of the publish path")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=7)
        save(fig, "costs.png")
    return written


_LATENCY_TITLES: Final = {
    "interrupt": "hard interrupt → interrupted published (wall clock)",
    "ws": "publish → WebSocket client in another process",
    "sessions": "publish → subscriber, many sessions in one runtime",
}


def _latency_panel(ax: Any, bench: str, group: list[Json]) -> None:
    """Grouped bars of the pooled percentiles, one group per situation."""
    seen: dict[str, Json] = {}
    for f in group:  # one curve per situation (its p50 and p99 figures share them)
        seen.setdefault(f["name"].rsplit(".", 1)[0], f)
    width = 0.8 / len(seen)
    for i, (key, f) in enumerate(seen.items()):
        pcts = f["percentiles"]
        xs = [j + i * width for j in range(len(pcts))]
        ax.bar(xs, list(pcts.values()), width=width, label=key)
        if i == 0:
            ax.set_xticks([j + width * (len(seen) - 1) / 2 for j in range(len(pcts))], list(pcts))
    targets = [t["at_most"] for f in group for t in f["targets"] if t["at_most"]]
    if targets:
        ax.axhline(min(targets), color="tab:red", linestyle="--", label="target p99")
    if any(max(f["percentiles"].values()) > 50 * min(f["percentiles"].values()) for f in group):
        ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_title(_LATENCY_TITLES.get(bench, f"{bench}: latency percentiles"), fontsize=10)
    ax.legend(fontsize=8)


# ---- running -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-agent bench",
        description="Run the benchmark suite (ours and the baselines, in the same run).",
    )
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
    return parser


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
    args = _parser().parse_args(argv)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    try:
        suite = _import_suite()
    except BenchSetupError as exc:
        console.print(f"[red]trio-agent bench:[/] {exc}")
        return 2
    available: tuple[str, ...] = tuple(getattr(suite, "BENCHMARKS", ()))
    names = list(args.only) if args.only else list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        console.print(
            f"[red]trio-agent bench:[/] unknown benchmark(s) {', '.join(unknown)}; "
            f"available: {', '.join(available)}"
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    benches = [_load(n) for n in names]
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
                bar.console.print(f"[yellow]skipped[/] {bench.name}: {entry['message']}")
            else:
                bar.console.print(f"[red]failed[/] {bench.name}: {entry['message']}")
                if "traceback" in entry:
                    bar.console.print(entry["traceback"], markup=False, highlight=False)
            bar.advance(task)

    try:
        results["plots"] = plot(results, out)
    except ImportError:
        results["plots"] = []
        console.print(f"[yellow]plots skipped:[/] matplotlib is not installed ({INSTALL_HINT})")
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(render_markdown(results))
    _summary(console, results)
    console.print(
        f"report: {out / 'results.md'}, {out / 'results.json'}"
        + "".join(f", {out / p}" for p in results["plots"])
    )
    return 1 if any(b["status"] == "failed" for b in results["benchmarks"]) else 0


def _summary(console: Any, results: Json) -> None:
    from rich.table import Table

    table = Table(title="trio-agent bench", show_lines=False)
    for col in ("figure", "ours", "ratios", "targets"):
        table.add_column(col)
    for bench in results["benchmarks"]:
        for f in bench["figures"]:
            if f["kind"] == "cost":
                continue
            table.add_row(
                f["title"],
                fmt(f["ours"]["value"], f["unit"]),
                "\n".join(f"{r:.2f}x {b}" for b, r in f["ratios"].items()),
                "\n".join(f"{_verdict(t['met'])} {t['label']}" for t in f["targets"]),
            )
    console.print(table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
