"""Training threads that follow the cores other processes leave free.

A training step here is hundreds of short OpenMP parallel regions, and every region ends at a barrier. When
another process wants the cores, a thread of ours that loses its core holds each barrier up while its
partner spins, so a step falls to a sixth of its idle speed beside a second multi-threaded PyTorch job,
far below a fair share (docs/bench.md). One thread has no barriers to wait at. So the trainers ask a
``CoreShare`` after each step; every couple of seconds it measures how much CPU the other processes took
(``/proc/stat`` minus this process's own CPU time) and sets PyTorch's thread count to the cores left free,
at least one and never more than the count the process started with. On an idle machine nothing changes.

It is opt-in, ``MONOSEMANTIC_ADAPTIVE_THREADS=1``: the thread count sets how a matrix product splits its sums
(one and two threads differ by up to 5e-4 on a 512x4096 by 4096x64 product), so a run whose count changed
with the machine's load does not give the same numbers as the same command on an idle machine (the study's
LM, trained beside other jobs with the control on, ended at validation loss 5.009512 instead of 5.009517).
Records must be reproducible, so by default the count stays as it started.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

ADAPTIVE_VARIABLE = "MONOSEMANTIC_ADAPTIVE_THREADS"
CHECK_INTERVAL_S = 2.0
# A core counts as taken once other processes use more than this much of it; below, stray daemons and
# short bursts would make the count flicker.
TAKEN_SHARE = 0.4
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have run (``/proc/stat``); None where it cannot be read."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def usable_cores() -> int:
    """The cores this process may run on (its affinity), which is what competes with other processes."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def threads_for(cores: int, others: float, most: int) -> int:
    """Threads to use when other processes keep ``others`` cores busy: the free cores, 1 to ``most``."""
    free = cores - max(others, 0.0)
    return max(1, min(most, math.floor(free + 1 - TAKEN_SHARE)))


@dataclass
class ThreadChange:
    """One change of the thread count: when (seconds into training), to what, and the load that caused it."""

    at_s: float
    threads: int
    others: float


@dataclass
class CoreShare:
    """Sets PyTorch's CPU thread count to the cores other processes leave free, checked between steps."""

    stage: str = "training"
    cores: int = field(default_factory=usable_cores)
    most: int = field(default_factory=torch.get_num_threads)
    interval_s: float = CHECK_INTERVAL_S
    adaptive: bool = field(default_factory=lambda: os.environ.get(ADAPTIVE_VARIABLE, "0") == "1")
    clock: Callable[[], float] = time.monotonic
    own_seconds: Callable[[], float] = time.process_time
    busy_seconds: Callable[[], float | None] = machine_busy_seconds
    set_threads: Callable[[int], None] = torch.set_num_threads
    report: Callable[[str], None] | None = None
    changes: list[ThreadChange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.threads = self.most
        self.others = 0.0
        self._start = self.clock()
        self._last = (self._start, self.busy_seconds(), self.own_seconds())

    def after_step(self) -> ThreadChange | None:
        """Re-measure when the interval has passed; the change made, if the thread count changed."""
        now = self.clock()
        if not self.adaptive or now - self._last[0] < self.interval_s:
            return None
        busy, own = self.busy_seconds(), self.own_seconds()
        then, busy_then, own_then = self._last
        self._last = (now, busy, own)
        if busy is None or busy_then is None:
            return None
        self.others = max(0.0, ((busy - busy_then) - (own - own_then)) / (now - then))
        threads = threads_for(self.cores, self.others, self.most)
        if threads == self.threads:
            return None
        self.threads = threads
        self.set_threads(threads)
        change = ThreadChange(round(now - self._start, 1), threads, round(self.others, 2))
        self.changes.append(change)
        if self.report is not None:
            self.report(f"{self.stage}: {self.describe()}")
        return change

    def describe(self) -> str:
        """The state for a progress line, e.g. ``machine busy (others use 1.3 of 2 cores): 1 thread``."""
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        if self.threads < self.most:
            return f"machine busy (others use {self.others:.1f} of {self.cores} cores): {threads}"
        return f"machine free again: {threads}" if self.changes else threads

    def record(self) -> dict:
        """What metrics.json keeps: cores, the starting and lowest thread counts, and every change."""
        return {
            "cores": self.cores,
            "threads": self.most,
            "adaptive": self.adaptive,
            "fewest_threads": min([self.most, *(c.threads for c in self.changes)]),
            "changes": [c.__dict__ for c in self.changes],
        }

    def close(self) -> dict:
        """Give the process back its starting thread count and keep this stage's record; the record."""
        if self.threads != self.most:
            self.threads = self.most
            self.set_threads(self.most)
        _RECORDS[self.stage] = record = self.record()
        return record


_RECORDS: dict[str, dict] = {}


def watch_cores(stage: str, device: torch.device | str, report: Callable[[str], None] | None) -> CoreShare:
    """The thread control of one training stage: adaptive on the CPU, inert on a GPU (threads only feed it)."""
    share = CoreShare(stage=stage, report=report)
    if torch.device(device).type != "cpu":
        share.adaptive = False
    return share


def threads_record() -> dict:
    """metrics.json's ``threads``: per stage trained in this process, its cores, thread counts and changes."""
    return dict(_RECORDS)
