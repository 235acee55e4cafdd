"""FileArea: names, uploads, limits, downloads, change detection, expiry, isolation, with
its real collaborators (a SQLite store for the records, a fair pool for the work).

What belongs to the area's parts is beside it: names and links in test_paths.py, listings
in test_listing.py, uploads and downloads in test_transfer.py. The kernel-facing side
(upload then analyse, a generated chart detected) is in tests/kernels/test_startup.py,
which runs real kernels; the same cases through the server are in
tests/server/test_files_*.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from files.area import BadFileName, FileArea, FileAreaPurged, FileChange, FileExpired, FileNotFound
from files.areas import FileAreas
from files.listing import page
from tests.files.helpers import BLOCK, HOUR, Clock, names, upload
from tests.polling import until


def test_missing_directory_and_fifo_are_not_found(area: FileArea) -> None:
    with pytest.raises(FileNotFound):
        area.open_for_download("nope.csv")  # area not even created yet
    (area.root / "sub").mkdir(parents=True)
    os.mkfifo(area.root / "pipe")
    for name in ("nope.csv", "sub", "pipe", "sub/nope", "nope/x"):
        with pytest.raises(FileNotFound):
            area.open_for_download(name)
    with pytest.raises(FileNotFound):
        area.delete("sub")
    assert page(area.root, None, 10)[0] == []


async def test_other_tenants_and_users_are_unreachable(areas: FileAreas, tmp_path: Path) -> None:
    a = areas.area("tenant-a", "alice")
    b = areas.area("tenant-b", "alice")
    c = areas.area("tenant-a", "bob")
    await upload(b, "secret.csv", b"b's data")
    await upload(c, "secret.csv", b"bob's data")
    attempts = [
        "../../tenant-b/alice/secret.csv",
        "../bob/secret.csv",
        str(b.root / "secret.csv"),
        "..%2Fbob%2Fsecret.csv",  # not decoded here: just a missing name
        "secret.csv",
    ]
    for name in attempts:
        with pytest.raises((BadFileName, FileNotFound)):
            await a.aopen_for_download(name)
    os.makedirs(a.root, exist_ok=True)
    os.symlink(b.root / "secret.csv", a.root / "via-link.csv")
    with pytest.raises(BadFileName):
        a.open_for_download("via-link.csv")
    assert await names(a) == []
    assert await a.store.file_records("tenant-a", "alice", ["secret.csv"]) == {}


async def test_changes_since_sees_created_and_modified_not_hidden(area: FileArea) -> None:
    area.quota = 10 * BLOCK
    await upload(area, "keep.csv", b"1")
    await upload(area, "edit.csv", b"1")
    before = area.snapshot()
    (area.root / "edit.csv").write_bytes(b"22")
    (area.root / "chart.png").write_bytes(b"png")
    (area.root / "out").mkdir()
    (area.root / "out" / "report.txt").write_bytes(b"r")
    (area.root / ".ipynb_checkpoints").mkdir()
    (area.root / ".ipynb_checkpoints" / "x.csv").write_bytes(b"x")
    (area.root / ".hidden").write_bytes(b"h")
    with area.open_upload("pending.bin") as up:
        up.write(b"p")  # an upload in flight is not a change
        assert area.changes_since(before) == [
            FileChange("chart.png", 3, "created"),
            FileChange("edit.csv", 2, "modified"),
            FileChange("out/report.txt", 1, "created"),
        ]
    assert area.changes_since(area.snapshot()) == []


def test_usage_and_snapshots_count_every_byte(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    empty = area.snapshot()
    assert empty.used == area.usage() == 0
    (area.root / "a.bin").write_bytes(b"a" * 3 * BLOCK)
    (area.root / ".cache").mkdir()
    (area.root / ".cache" / "b.bin").write_bytes(b"b" * 2 * BLOCK)  # hidden files count too
    assert area.usage() == area.snapshot().used == 5 * BLOCK  # over the quota of 4 blocks


async def test_expiry_with_an_injected_clock(area: FileArea, clock: Clock) -> None:
    await upload(area, "old.csv", b"old")
    await upload(area, "dir/old.txt", b"old")
    clock.now += 47 * HOUR
    assert await area.aexpire() == []
    with area.open_for_download("old.csv"):
        pass
    clock.now += 2 * HOUR
    (area.root / "fresh.csv").write_bytes(b"new")
    os.utime(area.root / "fresh.csv", (clock.now, clock.now))
    up = await area.aopen_upload("incoming.csv")
    await up.awrite(b"in flight")
    with pytest.raises(FileExpired, match="expired"):
        area.open_for_download("old.csv")  # 404 naming expiry, before the janitor runs
    assert await area.aexpire() == ["dir/old.txt", "old.csv"]
    with pytest.raises(FileExpired, match="expired"):
        await area.aopen_for_download("dir/old.txt")  # gone, and remembered as expired
    await area.acommit(up)  # an upload in flight is not in the work dir: expiry misses it
    assert sorted(await names(area)) == ["fresh.csv", "incoming.csv"]
    assert await area.store.file_records("t1", "alice", ["old.csv"]) == {}
    clock.now += 49 * HOUR
    with pytest.raises(FileNotFound) as caught:
        await area.aopen_for_download("old.csv")  # remembered for another TTL only
    assert not isinstance(caught.value, FileExpired)


async def test_purge_ends_uploads_in_flight_and_forgets_everything(area: FileArea) -> None:
    await upload(area, "a.txt", b"a")
    up = await area.aopen_upload("b.txt")
    await up.awrite(b"partial")
    assert await area.apurge() is True
    assert not area.root.exists() and os.listdir(area.staging) == []
    with pytest.raises(FileAreaPurged):
        await up.awrite(b"more")
    with pytest.raises(FileAreaPurged):
        await area.acommit(up)
    assert await area.store.file_records("t1", "alice", ["a.txt"]) == {}
    assert await area.apurge() is False  # nothing left to purge
    await upload(area, "c.txt", b"c")  # a new upload after the purge works
    assert await names(area) == ["c.txt"]


async def test_small_work_dirs_are_walked_without_waiting_for_the_file_worker(
    area: FileArea,
) -> None:
    """Each execution walks its work dir before and after: a small one is walked on the
    loop (not queued behind the user's own file work), a large one on the file worker; the
    answers are the same either way, across the bound in both directions."""
    import asyncio
    import threading

    from files.area import INLINE_ENTRIES

    area.root.mkdir(parents=True)
    release = threading.Event()
    area.lane.submit(release.wait, 30)  # the user's one file worker is busy
    try:
        before = await asyncio.wait_for(area.asnapshot(), 5)
        (area.root / "a.csv").write_bytes(b"a")
        changes = await asyncio.wait_for(area.achanges_since(before), 5)
        assert changes == [FileChange("a.csv", 1, "created")] == area.changes_since(before)
        for i in range(INLINE_ENTRIES):
            (area.root / f"f{i:03}.txt").write_bytes(b"f")
        walk = asyncio.ensure_future(area.achanges_since(before))
        # Too large for the loop: the walk is queued behind the busy worker's job.
        await until(lambda: area.lane.key in area.lane.pool._queues)
        assert not walk.done()
    finally:
        release.set()
    assert await walk == area.changes_since(before) and len(await walk) == INLINE_ENTRIES + 1
    large = await area.asnapshot()
    assert large == area.snapshot()
    for i in range(INLINE_ENTRIES):
        (area.root / f"f{i:03}.txt").unlink()
    assert await area.asnapshot() == area.snapshot()  # found small again by the worker
    release.clear()
    area.lane.submit(release.wait, 30)
    try:
        small = await asyncio.wait_for(area.asnapshot(), 5)  # on the loop again
    finally:
        release.set()
    assert small == area.snapshot() and set(small.stamps) == {"a.csv"}
