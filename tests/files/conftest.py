"""A user's file area with its real collaborators: a SQLite store for the records, a fair
pool for the work, opaque work dirs, a clock the test sets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from files.area import FileArea, FileLimits
from files.areas import FileAreas
from files.pool import FairPool
from files.work_dirs import WorkDirs
from tests.files.helpers import BLOCK, Clock
from transcript.store.sqlite import SqliteStore


@pytest.fixture
def clock() -> Clock:
    import time

    c = Clock()
    c.now = time.time()
    return c


@pytest.fixture
async def areas(tmp_path: Path, clock: Clock) -> AsyncIterator[FileAreas]:
    store = SqliteStore(tmp_path / "kss.sqlite3")
    await store.open()
    pool = FairPool(2)
    limits = FileLimits(max_file_bytes=2 * BLOCK, quota=4 * BLOCK)
    work_dirs = WorkDirs(tmp_path / "files", b"test secret")
    areas = FileAreas(work_dirs, tmp_path / "staging", store, pool, limits, clock)
    areas.reset_staging()
    yield areas
    await pool.close()
    await store.close()


@pytest.fixture
def area(areas: FileAreas) -> FileArea:
    return areas.area("t1", "alice")
