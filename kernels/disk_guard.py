"""`DiskGuard`: the user's disk quota holds whatever shape the code has.

Uploads are checked byte by byte, but code writes straight to the work dir, from the
execution, from a thread that outlives it, or from a process it started. While the session
has a kernel, the guard looks at the work dir every `interval` seconds, but only when the
kernel has used CPU since the last look (nothing writes without running, so idle sessions
cost one small read each). Once the files are over the quota and still growing, it calls
`on_overrun` with the reason: the session stops the running execution, as a timeout would,
or, when nothing runs, replaces the kernel whose background writer it cannot reach
otherwise. Shrinking an area that is over quota (deleting files) is never an overrun.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class DiskUsage(Protocol):
    quota: int

    async def usage(self) -> int:
        """Every byte in the work dir (and uploads in flight)."""
        ...


class DiskGuard:
    """One owned task per session; see the module docstring."""

    def __init__(
        self,
        area: DiskUsage,
        kernel_cpu: Callable[[], float | None],
        on_overrun: Callable[[str], None],
        interval: float = 1.0,
        name: str = "disk-guard",
    ) -> None:
        self.area = area
        self.kernel_cpu = kernel_cpu
        self.on_overrun = on_overrun
        self.interval = interval
        self._last_usage: int | None = None
        self._task = asyncio.get_running_loop().create_task(self._watch(), name=name)

    def rebase(self, used: int) -> None:
        """What the work dir holds now (an execution starts): growth counts from here."""
        self._last_usage = used

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self) -> None:
        last_cpu: float | None = None
        while True:
            await asyncio.sleep(self.interval)
            cpu = self.kernel_cpu()
            if cpu is None:  # no kernel now
                last_cpu = self._last_usage = None
                continue
            if last_cpu is not None and cpu <= last_cpu and self._last_usage is not None:
                continue  # nothing ran, so nothing grew
            last_cpu = cpu
            try:
                used = await self.area.usage()
            except Exception as exc:
                if getattr(exc, "code", "") == "quota_exceeded":  # more entries than allowed
                    self.on_overrun(str(exc))
                else:
                    log.warning("disk check failed: %r", exc)
                self._last_usage = None
                continue
            last, self._last_usage = self._last_usage, used
            if last is not None and used > self.area.quota and used > last:
                self.on_overrun(
                    f"the session's files take {used} bytes, over its quota of "
                    f"{self.area.quota} bytes, and kept growing; delete files to free space"
                )
                self._last_usage = None  # what the stopped writer still adds is not news
