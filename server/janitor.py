"""Periodic expiry on three clocks: idle kernels (which hibernate), files, and transcripts
(with their record and hibernated variables).

File expiry goes through each user's lane of the fair file pool, one user after another,
and through the store's records, like any other file work: a sweep never holds a thread
other users need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from files.areas import FileAreas
from kernels.registry import SessionRegistry
from transcript.transcript import Transcript

log = logging.getLogger(__name__)


class Janitor:
    """One owned background task that runs `sweep()` every `interval` seconds."""

    def __init__(
        self,
        registry: SessionRegistry,
        files: FileAreas,
        transcript: Transcript,
        *,
        idle_timeout: float,
        transcript_ttl: float,
        interval: float,
    ) -> None:
        self.registry = registry
        self.files = files
        self.transcript = transcript
        self.idle_timeout = idle_timeout
        self.transcript_ttl = transcript_ttl
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.file_bytes: int | None = None  # in every work dir, as of the last sweep

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="janitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep(self, now: float | None = None) -> dict[str, int]:
        """One pass over every expiry clock; returns what it removed."""
        now = time.time() if now is None else now
        culled = await self.registry.cull_idle(self.idle_timeout, now)
        files = stored = 0
        for tenant, user in await self.files.users():
            area = self.files.area(tenant, user)
            files += len(await area.aexpire(now))
            stored += await area.ausage()
        self.file_bytes = stored
        transcripts = 0
        for record in await self.transcript.expired_sessions(now - self.transcript_ttl):
            if self.registry.find(record.tenant, record.user) is None:
                await self.transcript.delete(record.tenant, record.user)
                # Hibernated variables expire with the transcript, not with the files.
                await self.files.area(record.tenant, record.user).adrop_hibernation()
                transcripts += 1
        return {"kernels": len(culled), "files": files, "transcripts": transcripts}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                removed = await self.sweep()
                if any(removed.values()):
                    log.info("janitor removed %s", removed)
            except Exception:
                log.exception("janitor sweep failed")
