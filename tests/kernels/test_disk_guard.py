"""DiskGuard: looks at the work dir only after the kernel used CPU, and reports growth past
the quota (never an area that is over quota but holding still or shrinking).

The area is a small stand-in implementing the guard's own `DiskUsage` protocol; the clock of
the guard is its real task, polled for with `until`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from files.errors import QuotaExceeded
from kernels.disk_guard import DiskGuard
from tests.polling import until

QUOTA = 1000
INTERVAL = 0.01


class Area:
    """A `DiskUsage`: reports `used` (or raises `error`) and counts the looks."""

    def __init__(self, used: int = 0) -> None:
        self.quota = QUOTA
        self.used = used
        self.error: Exception | None = None
        self.reads = 0

    async def usage(self) -> int:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.used


class Kernel:
    """The kernel's CPU time as the session reports it; None when there is no kernel."""

    def __init__(self) -> None:
        self.cpu: float | None = 0.0
        self.asked = 0

    def __call__(self) -> float | None:
        self.asked += 1
        return self.cpu


class Guarded:
    def __init__(self) -> None:
        self.area = Area()
        self.kernel = Kernel()
        self.overruns: list[str] = []
        self.guard = DiskGuard(self.area, self.kernel, self.overruns.append, INTERVAL)

    async def looks(self, n: int = 1) -> None:
        """Until the guard has asked for the kernel's CPU `n` more times."""
        target = self.kernel.asked + n
        await until(lambda: self.kernel.asked >= target)

    async def run(self, cpu: float, used: int) -> None:
        """The kernel runs (more CPU) and the area now takes `used`; one more read."""
        reads = self.area.reads
        self.kernel.cpu, self.area.used = cpu, used
        await until(lambda: self.area.reads > reads)


@pytest.fixture
async def guarded() -> AsyncIterator[Guarded]:
    g = Guarded()
    yield g
    await g.guard.close()


async def test_an_idle_kernel_costs_no_reads(guarded: Guarded) -> None:
    await until(lambda: guarded.area.reads == 1)  # the first look reads once
    await guarded.looks(5)
    assert guarded.area.reads == 1  # no CPU since: nothing can have grown
    guarded.kernel.cpu = None  # no kernel at all
    await guarded.looks(5)
    assert guarded.area.reads == 1


async def test_growth_past_the_quota_is_an_overrun(guarded: Guarded) -> None:
    await guarded.run(cpu=1, used=900)
    await guarded.run(cpu=2, used=1200)  # over the quota and grown since the last look
    assert len(guarded.overruns) == 1
    assert "1200 bytes" in guarded.overruns[0] and f"quota of {QUOTA}" in guarded.overruns[0]


async def test_over_quota_but_holding_still_or_shrinking_is_not(guarded: Guarded) -> None:
    await guarded.run(cpu=1, used=5000)  # the first look: nothing to compare with
    await guarded.run(cpu=2, used=5000)  # a long computation over quota, not writing
    await guarded.run(cpu=3, used=4000)  # deleting files
    assert guarded.overruns == []
    await guarded.run(cpu=4, used=4001)
    assert len(guarded.overruns) == 1


async def test_a_new_kernel_starts_the_comparison_afresh(guarded: Guarded) -> None:
    await guarded.run(cpu=1, used=2000)
    guarded.kernel.cpu = None  # the kernel was replaced
    await guarded.looks(2)
    await guarded.run(cpu=0.5, used=3000)  # the new kernel's first look: a baseline only
    assert guarded.overruns == []


async def test_too_many_entries_is_an_overrun_other_errors_are_logged(
    guarded: Guarded, caplog: pytest.LogCaptureFixture
) -> None:
    guarded.area.error = QuotaExceeded("more than 100000 entries in the work dir")
    await guarded.run(cpu=1, used=0)
    assert guarded.overruns == ["more than 100000 entries in the work dir"]
    with caplog.at_level(logging.WARNING, logger="kernels.disk_guard"):
        guarded.area.error = OSError("disk on fire")
        await guarded.run(cpu=2, used=0)
        await until(lambda: "disk check failed" in caplog.text)
    assert len(guarded.overruns) == 1
    guarded.area.error = None
    await guarded.run(cpu=3, used=5000)  # after an error the next look is a baseline
    assert len(guarded.overruns) == 1


async def test_close_stops_the_task() -> None:
    g = Guarded()
    await g.looks(1)
    await g.guard.close()
    asked = g.kernel.asked
    assert "disk-guard" not in {t.get_name() for t in asyncio.all_tasks()}
    await asyncio.sleep(INTERVAL * 5)  # a closed guard must not look again: give it time to
    assert g.kernel.asked == asked
