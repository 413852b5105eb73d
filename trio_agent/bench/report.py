"""The report of ``trio-agent bench``: the machine, ``results.md``, the plots, the summary.

``machine()`` describes where the figures were measured (CPU, cores, OS, Python and the
versions of the libraries that matter); ``render_markdown(results)`` writes one table
per benchmark and kind of figure; ``plot(results, out)`` writes the PNG plots
(matplotlib with the Agg backend: it raises ``ImportError`` without matplotlib, which
the runner reports as skipped plots); ``summary(console, results)`` prints the table at
the end of a run.  ``results`` is the JSON document the runner builds (see
:mod:`trio_agent.bench.runner`).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any, Final

__all__ = ["Json", "fmt", "machine", "plot", "render_markdown", "summary"]

VERSIONED: Final = (
    "trio",
    "attrs",
    "orjson",
    "langgraph",
    "websockets",
    "matplotlib",
    "coredis",
    "rich",
    "trio-agent",
)
"""Distributions whose versions go into ``results.json``."""

Json = dict[str, Any]


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
    "llama": "a token's bytes off the socket → the token at the consumer",
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
        ax.axhline(min(targets), color="tab:red", linestyle="--", label="target")
    if any(max(f["percentiles"].values()) > 50 * min(f["percentiles"].values()) for f in group):
        ax.set_yscale("log")
    ax.set_ylabel(group[0]["unit"])  # (a benchmark's latency figures share their unit)
    ax.set_title(_LATENCY_TITLES.get(bench, f"{bench}: latency percentiles"), fontsize=10)
    ax.legend(fontsize=8)


# ---- the summary at the end of a run ------------------------------------------------


def summary(console: Any, results: Json) -> None:
    """Print one row per figure (costs left out) to ``console`` (a ``rich`` console)."""
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
