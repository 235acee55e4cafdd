"""`BootGate`: how many kernels may be starting at once, and who starts first.

A kernel start is about half a second of one core (Python and its imports). Twenty at once on
two cores all finish together after some four seconds; a few at a time (the pool allows CPU
count + 1, so a start waiting on its sockets leaves no core idle), the first users are ready
in half a second and the last about as late as before, and users already running compete
with a few starts instead of twenty. Warm-pool refills, which nobody waits for, start only
while no session's start is running or waiting: they never take CPU from a waiting user.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

URGENT, BACKGROUND = 0, 1


class BootGate:
    """At most `limit` holders at once; waiters served by priority, then arrival.

    A BACKGROUND holder is let in only while no URGENT one holds or waits.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a boot gate needs a limit of at least 1")
        self.limit = limit
        self.running = 0
        self._urgent = 0  # URGENT holders
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return self._waiting(BACKGROUND)

    def _waiting(self, priority: int) -> int:
        """Waiters that go before or with an arrival of `priority`."""
        return sum(1 for p, _, fut in self._waiters if p <= priority and not fut.done())

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = URGENT) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release(priority)

    def _may_enter(self, priority: int) -> bool:
        return self.running < self.limit and (priority == URGENT or not self._urgent)

    def _enter(self, priority: int) -> None:
        self.running += 1
        self._urgent += priority == URGENT

    async def _acquire(self, priority: int) -> None:
        if self._may_enter(priority) and not self._waiting(priority):
            self._enter(priority)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just as we were cancelled
                self._release(priority)
            raise

    def _release(self, priority: int) -> None:
        self.running -= 1
        self._urgent -= priority == URGENT
        while self._waiters:
            first, _, fut = self._waiters[0]
            if fut.done():  # cancelled while waiting
                heapq.heappop(self._waiters)
                continue
            if not self._may_enter(first):
                return
            heapq.heappop(self._waiters)
            self._enter(first)
            fut.set_result(None)
