"""UidPool: a free uid of the range per kernel, round robin, never one a process runs as or
another pool holds (lock files in a tmp dir; uids 2600000-2600009 of this suite alone)."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernels.sandbox.uids import NoFreeUid, UidPool, processes_by_uid
from tests.polling import until

FIRST, LAST = 2_600_000, 2_600_009
UIDS = range(FIRST, LAST + 1)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="running a process as another uid")


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "uid-locks"


@pytest.fixture
def pool(lock_dir: Path) -> Iterator[UidPool]:
    p = UidPool(FIRST, LAST, lock_dir)
    yield p
    for uid in UIDS:
        p.release(uid)


@contextlib.contextmanager
def running_as(uid: int) -> Iterator[subprocess.Popen[bytes]]:
    """A process of `uid` (sleeping), ended on exit."""
    proc = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("first", "last", "why"),
    [
        (0, 10, "must be 1 <= first"),
        (-5, 2000, "must be 1 <= first"),
        (2000, 1999, "must be 1 <= first <= last"),
        (999, 2000, "overlaps system accounts"),
        (1, 1, "overlaps system accounts"),
    ],
)
def test_bad_ranges_are_refused(first: int, last: int, why: str, lock_dir: Path) -> None:
    with pytest.raises(ValueError, match=why):
        UidPool(first, last, lock_dir)


def test_a_range_of_one_uid_is_fine(lock_dir: Path) -> None:
    p = UidPool(FIRST, FIRST, lock_dir)
    assert p.allocate() == FIRST
    with pytest.raises(NoFreeUid):
        p.allocate()
    p.release(FIRST)
    assert p.allocate() == FIRST


def test_round_robin_reuses_a_released_uid_as_late_as_possible(pool: UidPool) -> None:
    got = [pool.allocate() for _ in range(3)]
    assert got == [FIRST, FIRST + 1, FIRST + 2] and pool.in_use == 3
    pool.release(FIRST)
    assert pool.in_use == 2
    assert pool.allocate() == FIRST + 3  # not the one just released
    rest = [pool.allocate() for _ in range(7)]
    assert rest == [*range(FIRST + 4, LAST + 1), FIRST]  # wraps round to the free one
    with pytest.raises(NoFreeUid, match="all 10 kernel uids"):
        pool.allocate()
    pool.release(FIRST + 5)
    assert pool.allocate() == FIRST + 5


def test_release_of_a_uid_not_held_is_harmless(pool: UidPool) -> None:
    pool.release(FIRST)
    pool.release(12345)
    assert pool.allocate() == FIRST and pool.in_use == 1


def test_lock_files_are_private(pool: UidPool, lock_dir: Path) -> None:
    uid = pool.allocate()
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((lock_dir / str(uid)).stat().st_mode) == 0o600


def test_a_second_pool_on_the_same_lock_dir_never_gets_a_held_uid(
    pool: UidPool, lock_dir: Path
) -> None:
    other = UidPool(FIRST, LAST, lock_dir)  # another server on this machine
    try:
        mine = {pool.allocate() for _ in range(4)}
        theirs = {other.allocate() for _ in range(6)}
        assert mine == set(range(FIRST, FIRST + 4)) and theirs == set(range(FIRST + 4, LAST + 1))
        with pytest.raises(NoFreeUid):
            other.allocate()  # every uid held, by one pool or the other
        pool.release(FIRST + 2)
        assert other.allocate() == FIRST + 2  # its lock is free again
    finally:
        for uid in UIDS:
            other.release(uid)


def test_a_pool_that_goes_away_frees_its_uids(lock_dir: Path) -> None:
    crashed = UidPool(FIRST, LAST, lock_dir)
    assert crashed.allocate() == FIRST
    for uid in UIDS:  # what the kernel closing every fd of a dead server does
        crashed.release(uid)
    assert UidPool(FIRST, LAST, lock_dir).allocate() == FIRST


@as_root
def test_uids_a_process_runs_as_are_skipped(
    pool: UidPool, caplog: pytest.LogCaptureFixture
) -> None:
    with running_as(FIRST + 1) as stray, caplog.at_level(logging.WARNING):
        assert processes_by_uid(UIDS) == {FIRST + 1: [stray.pid]}
        assert [pool.allocate() for _ in range(2)] == [FIRST, FIRST + 2]
        assert f"kernel uid {FIRST + 1} skipped" in caplog.text
        assert str(stray.pid) in caplog.text
    assert processes_by_uid(UIDS) == {}
    pool.release(FIRST)
    pool.release(FIRST + 2)
    after = [pool.allocate() for _ in range(9)]
    assert after == [*range(FIRST + 3, LAST + 1), FIRST, FIRST + 1]  # free again once it ended


@as_root
async def test_a_zombie_does_not_hold_its_uid() -> None:
    with running_as(FIRST + 7) as proc:
        assert processes_by_uid(UIDS) == {FIRST + 7: [proc.pid]}
        os.kill(proc.pid, 9)  # dead, not yet reaped: a zombie
        status = Path(f"/proc/{proc.pid}/status")
        await until(lambda: "State:\tZ" in status.read_text())
        assert processes_by_uid(UIDS) == {}
