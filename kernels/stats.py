"""What the kernel layer counts for operators: plain numbers, no exporter.

`KernelStats` is owned by the `KernelPool` (every session reaches it through its pool) and
only ever incremented; the server's `/metrics` reads it when scraped (`server/metrics.py`).
Counting here costs an integer add per event, so metrics on or off the round trip is the
same. Nothing here is per user: operators get totals, never a label per tenant or user.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

# Seconds: an execution is anything from a millisecond to the longest timeout (hours).
EXECUTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class Replaced(StrEnum):
    """Why a session's kernel was replaced by a fresh one (not a death: that is `died`)."""

    RESTART = "restart"  # the user asked
    TIMEOUT = "timeout"  # it ignored the interrupt after its execution's timeout
    PROCESS_LIMIT = "process_limit"  # its code hit the pids limit
    DISK_QUOTA = "disk_quota"  # a background writer filled the work dir
    RESTORE_FAILED = "restore_failed"  # restoring hibernated variables failed or took too long


class LimitHit(StrEnum):
    """A sandbox or server limit that stopped an execution."""

    MEMORY = "memory"  # the kernel was killed at its memory limit
    PIDS = "pids"  # the code hit the process limit
    DISK_QUOTA = "disk_quota"  # the work dir went over quota
    TIMEOUT = "timeout"  # the execution ran past its timeout
    OUTPUT = "output"  # output past the cap was cut


@dataclass
class Histogram:
    """Cumulative-bucket counts as Prometheus reads them; `counts[i]` holds the values
    <= `buckets[i]` that are above the bucket before, the last slot those above all."""

    buckets: tuple[float, ...] = EXECUTION_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count of values <= it) for each bucket and "+Inf"."""
        out, running = [], 0
        for bound, n in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class KernelStats:
    kernels_started: int = 0
    kernels_culled: int = 0
    kernels_died: int = 0
    kernels_replaced: Counter[str] = field(default_factory=Counter)
    executions: Counter[str] = field(default_factory=Counter)  # by CellStatus
    execution_seconds: Histogram = field(default_factory=Histogram)
    output_bytes: int = 0  # what executions sent to clients
    limit_hits: Counter[str] = field(default_factory=Counter)

    def execution_finished(self, status: str, seconds: float, sent_bytes: int, cut: bool) -> None:
        self.executions[status] += 1
        self.execution_seconds.observe(seconds)
        self.output_bytes += sent_bytes
        if status == "timeout":
            self.limit_hits[LimitHit.TIMEOUT] += 1
        if cut:
            self.limit_hits[LimitHit.OUTPUT] += 1
