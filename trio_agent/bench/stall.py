"""``stall``: memory stays flat while a subscriber is stalled (DESIGN §3, invariant 7).

One subscriber never receives while ``n`` token events are published:

- ``drop_oldest``: the publisher never waits; the subscriber's buffer keeps its newest
  ``capacity`` events and counts the rest as dropped;
- ``block`` with a small ``stall_timeout``: the publisher waits once, the stalled
  subscriber is evicted, publishing continues.

Also measured: the same stream with no subscriber at all (what the log and the reducer
hold on their own), and as a baseline the unbounded channel the design forbids
(``trio.open_memory_channel(math.inf)``), which holds every event.

Memory is the **peak RSS** growth: each variant runs in a fresh child process (so no
other benchmark's heap is counted or reused); after the set-up the child resets the
kernel's high-water mark (``/proc/self/clear_refs`` ← ``5``), and the figure is
``VmHWM`` at the end minus ``VmRSS`` before publishing, in MiB.  ``VmRSS`` is sampled
along the way for the memory-over-time plot.  The log has the default bounds
(``DEFAULT_LOG_MAX_EVENTS`` events, ``DEFAULT_LOG_MAX_BYTES``), so its own steady
state is part of what is measured.
"""

from __future__ import annotations

import gc
import json
import math
import subprocess
import sys
import time
from typing import Any, Final

import trio

from ._common import CHILD_CWD, Figure, Progress, Stat, Target, child_command, runs_for

NAME: Final = "stall"
TITLE: Final = "Memory under a stalled subscriber"

EVENTS: Final = 1_000_000
QUICK_EVENTS: Final = 50_000
STALL_TIMEOUT: Final = 0.05
"""Seconds the ``block`` variant lets the stalled subscriber hold the publisher."""
SAMPLES: Final = 100
"""Points of the memory-over-time curve."""
TARGET_MIB: Final = 20.0

VARIANTS: Final = ("drop_oldest", "block", "no_subscriber", "unbounded")
LABELS: Final = {
    "drop_oldest": "ours, drop_oldest",
    "block": f"ours, block + stall_timeout={STALL_TIMEOUT:g}s",
    "no_subscriber": "ours, no subscriber (log + reducer only)",
    "unbounded": "unbounded trio channel (math.inf)",
}


# ---- the child process ----------------------------------------------------------------


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure(variant: str, n: int) -> dict[str, Any]:
    """Publish ``n`` token events with one stalled subscriber (in this process)."""
    from trio_agent._bus import DEFAULT_CAPACITY, EventBus, Subscription

    from .bus import make_token, new_bus

    async def main() -> dict[str, Any]:
        bus: EventBus | None = None
        sub: Subscription | None = None
        send: trio.MemorySendChannel[Any] | None = None
        if variant == "unbounded":
            send, _receive = trio.open_memory_channel[Any](math.inf)
        else:
            bus = new_bus()
            if variant != "no_subscriber":
                sub = bus.open_subscription(
                    capacity=DEFAULT_CAPACITY,
                    policy="block" if variant == "block" else "drop_oldest",
                    stall_timeout=STALL_TIMEOUT,
                )
        every = max(1, n // SAMPLES)
        gc.collect()
        before = _status()["VmRSS"]
        reset = _reset_peak()
        series: list[tuple[float, float]] = [(0.0, 0.0)]
        t0 = time.perf_counter()
        for i in range(n):
            e = make_token(i)
            if bus is not None:
                try:
                    bus.publish_nowait(e)
                except trio.WouldBlock:
                    await bus.publish(e)
            else:
                assert send is not None
                send.send_nowait(e)
            if i % every == every - 1:
                series.append((float(i + 1), (_status()["VmRSS"] - before) / 1024))
        elapsed = time.perf_counter() - t0
        after = _status()
        peak = after["VmHWM"] if reset else max(after["VmHWM"], after["VmRSS"])
        result: dict[str, Any] = {
            "variant": variant,
            "events": n,
            "rss_before_mib": before / 1024,
            "peak_growth_mib": (peak - before) / 1024,
            "end_growth_mib": (after["VmRSS"] - before) / 1024,
            "peak_reset": reset,
            "seconds": elapsed,
            "series": series,
        }
        if bus is not None:
            stats = bus.statistics()
            result["log_events"] = stats.log_events
            result["log_bytes_estimate"] = stats.log_bytes
            if sub is not None:
                s = sub.statistics()
                result.update(buffered=s.buffered, dropped=s.dropped, evicted=s.evicted)
        return result

    return trio.run(main)


def _child_main(argv: list[str]) -> int:
    variant, n = argv[0], int(argv[1])
    json.dump(measure(variant, n), sys.stdout)
    return 0


# ---- the parent ---------------------------------------------------------------------


def run_child(variant: str, n: int) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter (the same one running us)."""
    proc = subprocess.run(
        child_command("stall", variant, str(n)),
        cwd=CHILD_CWD,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"stall benchmark child ({variant}, {n} events) failed with exit status "
            f"{proc.returncode}:\n{proc.stderr.strip()}"
        )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run(quick: bool, progress: Progress | None = None) -> list[Figure]:
    n = QUICK_EVENTS if quick else EVENTS
    runs = runs_for(quick)
    say = progress or (lambda _: None)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(runs):
        for variant in VARIANTS:
            say(f"{LABELS[variant]} — run {r + 1}/{runs}, {n:,} events")
            results[variant].append(run_child(variant, n))

    def stat(variant: str) -> Stat:
        return Stat(tuple(x["peak_growth_mib"] for x in results[variant]))

    def middle(variant: str) -> dict[str, Any]:
        """The run whose peak growth is the median (for its curve and details)."""
        rs = sorted(results[variant], key=lambda x: x["peak_growth_mib"])
        return rs[len(rs) // 2]

    series = {LABELS[v]: [tuple(p) for p in middle(v)["series"]] for v in VARIANTS}
    details = {v: {k: val for k, val in middle(v).items() if k != "series"} for v in VARIANTS}
    reset = all(x["peak_reset"] for rs in results.values() for x in rs)
    method = (
        "peak RSS growth: VmHWM (reset via /proc/self/clear_refs after set-up) minus "
        "VmRSS before publishing, fresh child process per run"
        if reset
        else "peak RSS growth: VmHWM minus VmRSS before publishing (the high-water mark "
        "could not be reset; it may include the set-up's peak)"
    )
    reference = {
        LABELS["no_subscriber"]: stat("no_subscriber"),
        LABELS["unbounded"]: stat("unbounded"),
    }
    figures = []
    for variant in ("drop_oldest", "block"):
        d = details[variant]
        extra = (
            f"dropped {d.get('dropped', 0):,}"
            if variant == "drop_oldest"
            else f"evicted: {d.get('evicted')!r}"
        )
        figures.append(
            Figure(
                benchmark=NAME,
                name=f"stall.{variant}",
                title=f"peak RSS growth, stalled subscriber, {variant}",
                unit="MiB",
                kind="memory",
                ours=stat(variant),
                baselines=dict(reference),
                higher_is_better=False,
                targets=(Target(f"< {TARGET_MIB:g} MiB", at_most=TARGET_MIB),),
                series=series,
                notes=(
                    f"{n:,} events; {method}; log held {d.get('log_events', 0):,} events "
                    f"(~{d.get('log_bytes_estimate', 0) / 2**20:.1f} MiB estimated); "
                    f"{extra}; published in {d['seconds']:.2f}s"
                ),
            )
        )
    return figures


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
