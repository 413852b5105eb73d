"""The AG-UI runs a stream can rejoin (``GET /agui/{threadId}`` with ``Last-Event-ID``):
:class:`AGUIRuns`, bounded and sans-I/O.

Each entry is one AG-UI run a ``POST /agui`` started (:class:`AGUIRun`): its thread and
run id, the seq it starts after, what it sent first (its prelude) and the mapper as it
was then, and, once it ended, the seq of the event that ended it.  A stream rejoined
after seq ``N`` is made again from these: the mapper replays the log from the start to
``N`` without sending, then goes on live (:mod:`.agui`).  Nothing here survives the
process: a run started by another process, or before a restart, cannot be rejoined
(the client is told so).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from .agui_mapping import AGUIMapper

__all__ = ["AGUI_RUNS_BYTES", "AGUI_THREADS", "RUNS_PER_THREAD", "AGUIRun", "AGUIRuns"]

AGUI_THREADS: Final = 1_000
"""Threads whose recent runs are kept (the least recently used forgotten first): as
many as a server holds sessions by default (``max_sessions``)."""

RUNS_PER_THREAD: Final = 4
"""Runs kept per thread, the newest: a client rejoins the run it was just watching;
a few cover a steering ``POST`` that joined a run another was streaming."""

AGUI_RUNS_BYTES: Final = 64 * 1024 * 1024
"""What the kept runs' preludes may weigh together, as sent (each holds a snapshot of
its conversation): past it the least recently used thread's oldest run is forgotten
first.  64 MiB is the default 1,000 threads with a 64 KiB conversation each; a prelude
echoes no input (``RUN_STARTED`` is kept without it), so a client's big ``POST`` costs
the server what its conversation weighs, not its body."""


@attrs.define
class AGUIRun:
    """One AG-UI run, as a rejoining stream needs it (see the module docstring)."""

    thread: str
    run_id: str
    start: int
    prelude: tuple[Any, ...]  # the ag_ui events it started with
    mapper: AGUIMapper  # a copy, as it was after the prelude
    end: int | None = None
    size: int = 0  # (the prelude's bytes as sent: what it weighs in AGUI_RUNS_BYTES)

    def holds(self, seq: int) -> bool:
        """Whether ``seq`` is within this run (its prelude counts as ``start``)."""
        return self.start <= seq and (self.end is None or seq <= self.end)


class AGUIRuns:
    """The newest :data:`RUNS_PER_THREAD` runs of at most :data:`AGUI_THREADS` threads,
    their preludes within :data:`AGUI_RUNS_BYTES` together."""

    def __init__(
        self,
        threads: int = AGUI_THREADS,
        per_thread: int = RUNS_PER_THREAD,
        max_bytes: int = AGUI_RUNS_BYTES,
    ) -> None:
        self.threads = threads
        self.per_thread = per_thread
        self.max_bytes = max_bytes
        self.bytes = 0  # the kept preludes' sizes, summed
        self._count = 0
        self._runs: OrderedDict[str, deque[AGUIRun]] = OrderedDict()

    def add(self, run: AGUIRun) -> None:
        runs = self._runs.get(run.thread)
        if runs is None:
            runs = self._runs[run.thread] = deque()
        else:
            self._runs.move_to_end(run.thread)
        runs.append(run)
        self.bytes += run.size
        self._count += 1
        if len(runs) > self.per_thread:
            self._forget(run.thread)
        while len(self._runs) > self.threads or (self.bytes > self.max_bytes and self._count > 1):
            self._forget(next(iter(self._runs)))  # (the least recently used thread)

    def _forget(self, thread: str) -> None:
        """Forget ``thread``'s oldest run (and the thread, when it was its last)."""
        runs = self._runs[thread]
        gone = runs.popleft()
        self.bytes -= gone.size
        self._count -= 1
        if not runs:
            del self._runs[thread]

    def find(self, thread: str, seq: int, run_id: str | None = None) -> AGUIRun | None:
        """The newest run of ``thread`` (with ``run_id``, if given) that holds ``seq``."""
        for run in reversed(self._runs.get(thread, ())):
            if (run_id is None or run.run_id == run_id) and run.holds(seq):
                return run
        return None

    def __len__(self) -> int:
        return self._count
