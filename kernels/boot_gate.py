"""`BootGate`: how many kernels may be starting at once, and who starts first.

A kernel start is about half a second of one core (Python and its imports). Twenty at once on
two cores all finish together after some four seconds; a few at a time (the pool allows CPU
count + 1, so a start waiting on its sockets leaves no core idle), the first users are ready
in half a second and the last about as late as before, and users already running compete
with a few starts instead of twenty. Starts for a waiting session go before warm-pool
refills, which nobody waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

URGENT, BACKGROUND = 0, 1


class BootGate:
    """At most `limit` holders at once; waiters served by priority, then arrival."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a boot gate needs a limit of at least 1")
        self.limit = limit
        self.running = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._waiters if not fut.done())

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = URGENT) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self.running < self.limit and not self.waiting:
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just as we were cancelled
                self._release()
            raise

    def _release(self) -> None:
        self.running -= 1
        while self._waiters and self.running < self.limit:
            *_, fut = heapq.heappop(self._waiters)
            if not fut.done():
                self.running += 1
                fut.set_result(None)
