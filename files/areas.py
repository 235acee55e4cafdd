"""Every user's file area on this server, and what the areas share: the fair pool their
work runs on, the store of their records, the staging dir of uploads and downloads, and
one upload ledger per user (so concurrent requests of a user share one quota)."""

from __future__ import annotations

import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from files.area import FileArea, FileLimits
from files.listing import FileRecordStore
from files.pool import FairPool
from files.transfer import Ledger
from files.work_dirs import WorkDirs

JANITOR_KEY = ("*", "janitor")  # the janitor's own lane: no user is named "*"


class FileAreas:
    """Every user's file area on this server, and what they share: the pool their work runs
    on, the store of their records, the staging dir, and one upload ledger per user."""

    def __init__(
        self,
        work_dirs: WorkDirs,
        staging: Path,
        store: FileRecordStore,
        pool: FairPool,
        limits: FileLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.work_dirs = work_dirs
        self.staging = staging
        self.store = store
        self.pool = pool
        self.limits = limits
        self.clock = clock
        self._ledgers: weakref.WeakValueDictionary[tuple[str, str], Ledger] = (
            weakref.WeakValueDictionary()
        )
        self._lock = threading.Lock()

    def work_dir(self, tenant: str, user: str) -> Path:
        return self.work_dirs.path(tenant, user)

    def area(self, tenant: str, user: str) -> FileArea:
        """The file area of (tenant, user); cheap, may be made per request."""
        with self._lock:
            ledger = self._ledgers.get((tenant, user))
            if ledger is None:
                ledger = self._ledgers[(tenant, user)] = Ledger()
        return FileArea(
            self.work_dir(tenant, user),
            tenant=tenant,
            user=user,
            staging=self.staging,
            store=self.store,
            lane=self.pool.lane((tenant, user)),
            ledger=ledger,
            limits=self.limits,
            clock=self.clock,
        )

    def reset_staging(self) -> None:
        """Wipe the staging dir: what is there was left by a crash (at start, before any
        upload). Blocking; call before serving."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.staging, 0o700)

    async def users(self) -> list[tuple[str, str]]:
        """(tenant, user) of every work dir, listed in the janitor's own lane."""
        return await self.pool.run(JANITOR_KEY, self.work_dirs.owners)
