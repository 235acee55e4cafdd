"""Periodic expiry: idle kernels now; files and transcripts join as they land."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import AppState

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
        settings = self.state.settings
        culled = await self.state.registry.cull_idle(settings.idle_timeout, now)
        return {"kernels": len(culled)}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.janitor_interval)
            try:
                removed = await self.sweep()
                if any(removed.values()):
                    log.info("janitor removed %s", removed)
            except Exception:
                log.exception("janitor sweep failed")
