"""Periodic expiry on three clocks: idle kernels, files, and transcripts (with their record).

File expiry goes through each user's lane of the fair file pool, one user after another,
and through the store's records, like any other file work: a sweep never holds a thread
other users need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import AppState

log = logging.getLogger(__name__)


class Janitor:
    """One owned background task that runs `sweep()` every `janitor_interval` seconds."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="janitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep(self, now: float | None = None) -> dict[str, int]:
        """One pass over every expiry clock; returns what it removed."""
        state = self.state
        settings = state.settings
        now = time.time() if now is None else now
        culled = await state.registry.cull_idle(settings.idle_timeout, now)
        files = 0
        for tenant, user in await state.files.users():
            files += len(await state.files.area(tenant, user).aexpire(now))
        transcripts = 0
        await state.transcript.flush()
        for record in await state.store.expired_sessions(now - settings.transcript_ttl_seconds):
            if state.registry.find(record.tenant, record.user) is None:
                await state.transcript.delete(record.tenant, record.user)
                transcripts += 1
        return {"kernels": len(culled), "files": files, "transcripts": transcripts}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.janitor_interval)
            try:
                removed = await self.sweep()
                if any(removed.values()):
                    log.info("janitor removed %s", removed)
            except Exception:
                log.exception("janitor sweep failed")
