"""FileArea: names, uploads, limits, downloads, change detection, expiry, isolation, with
its real collaborators (a SQLite store for the records, a fair pool for the work).

The kernel-facing side (upload then analyse, a generated chart detected) is in
test_startup.py, which runs real kernels; the same cases through the server are in
tests/server/test_files_*.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from files.area import (
    BadFileName,
    FileArea,
    FileAreaPurged,
    FileBusy,
    FileChange,
    FileExpired,
    FileInfo,
    FileLimits,
    FileNotFound,
    FileTooLarge,
    QuotaExceeded,
    Snapshot,
    validate_name,
)
from files.areas import FileAreas
from files.listing import page
from files.paths import MAX_ENTRIES, disk_bytes
from files.pool import FairPool
from files.work_dirs import WorkDirs
from transcript.store.sqlite import SqliteStore

HOUR = 3600.0
BLOCK = 4096  # sizes in whole blocks: what a file takes on disk is then its size


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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


async def upload(area: FileArea, name: str, data: bytes, chunk: int = 1000) -> FileInfo:
    up = await area.aopen_upload(name)
    try:
        for i in range(0, len(data), chunk):
            await up.awrite(data[i : i + chunk])
        [info] = await area.acommit(up)
        return info
    finally:
        up.abort()


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def names(area: FileArea) -> list[str]:
    return [f.name for f in (await area.alist()).files]


GOOD = ["sales.csv", "reports/q1/summary.txt", "données 2024.csv", "日本語.txt", "a" * 255]
BAD = [
    "",
    "..",
    "../secret",
    "a/../../b",
    "a/./b",
    "/etc/passwd",
    "a//b",
    "a/",
    "a\x00b",
    "a\nb",
    "tab\there",
    "del\x7f",
    "a" * 256,
    "é" * 128,  # 256 bytes in UTF-8
    "..\\..\\windows",
    ".hidden",
    "dir/.hidden",
    ".ipynb_checkpoints/x.csv",
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_everywhere(area: FileArea, name: str) -> None:
    with pytest.raises(BadFileName):
        validate_name(name)
    with pytest.raises(BadFileName):
        area.open_upload(name)
    with pytest.raises(BadFileName):
        area.open_for_download(name)
    with pytest.raises(BadFileName):
        area.delete(name)


@pytest.mark.parametrize("name", GOOD)
async def test_upload_roundtrip_with_unicode_and_nested_names(area: FileArea, name: str) -> None:
    data = name.encode() * 3
    info = await upload(area, name, data)
    assert (info.name, info.size, info.origin) == (name, len(data), "upload")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    with await area.aopen_for_download(name) as dl:
        assert dl.read(10_000) == data
    assert await names(area) == [name]


async def test_list_metadata_and_records_live_in_the_store(area: FileArea) -> None:
    info = await upload(area, "sales.csv", b"region,amount\nnorth,10\n")
    (area.root / "chart.png").write_bytes(b"\x89PNG fake")
    listed = {f.name: f for f in (await area.alist()).files}
    assert listed["sales.csv"] == info
    chart = listed["chart.png"]
    assert chart.origin == "generated"
    assert chart.sha256 == hashlib.sha256(b"\x89PNG fake").hexdigest()
    assert chart.expires_at == chart.modified + 48 * HOUR
    d = chart.as_dict()
    assert d["modified"].endswith("Z") and set(d) == {
        "name",
        "size",
        "modified",
        "expires_at",
        "origin",
        "sha256",
    }
    assert entries(area.root) == ["chart.png", "sales.csv"]  # nothing of ours in the work dir
    records = await area.store.file_records("t1", "alice", ["chart.png", "sales.csv"])
    assert records["chart.png"].sha256 == chart.sha256  # hash cached
    assert records["sales.csv"].origin == "upload"


async def test_code_rewriting_an_upload_makes_it_generated(area: FileArea) -> None:
    await upload(area, "data.csv", b"a\n1\n")
    (area.root / "data.csv").write_bytes(b"a\n1\n2\n")
    [info] = (await area.alist()).files
    assert info.origin == "generated"
    assert info.sha256 == hashlib.sha256(b"a\n1\n2\n").hexdigest()


async def test_listing_pages_and_forgets_records_of_deleted_files(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    for i in range(25):
        (area.root / f"f{i:02d}.txt").write_bytes(b"%d" % i)
    seen, after, pages = [], None, 0
    while True:
        page = await area.alist(after, limit=10)
        seen += [f.name for f in page.files]
        pages += 1
        if page.next is None:
            break
        assert page.next == page.files[-1].name
        after = page.next
    assert seen == [f"f{i:02d}.txt" for i in range(25)] and pages == 3
    assert not page.truncated
    (area.root / "f03.txt").unlink()
    assert "f03.txt" not in [f.name for f in (await area.alist(limit=10)).files]
    assert await area.store.file_records("t1", "alice", ["f03.txt", "f04.txt"]) != {}
    assert "f03.txt" not in await area.store.file_records("t1", "alice", ["f03.txt"])


async def test_a_listing_walks_at_most_max_entries(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    for i in range(MAX_ENTRIES + 10):
        (area.root / f"{i:05d}").touch()
    page = await area.alist(limit=5)
    assert page.truncated and len(page.files) == 5 and page.next is not None
    with pytest.raises(QuotaExceeded, match="more than"):
        area.usage()  # the quota never under-counts: past the bound is over quota
    assert area.overrun(area.snapshot()) is not None


def test_replace_is_atomic(area: FileArea) -> None:
    area.quota = 10 * BLOCK
    with area.open_upload("data.csv") as up:
        up.write(b"old" * 100)
        up.commit()
    reader = open(area.root / "data.csv", "rb")
    up = area.open_upload("data.csv")
    up.write(b"new" * 100)
    # Mid-upload the name still holds the whole old file, and the work dir nothing else.
    assert (area.root / "data.csv").read_bytes() == b"old" * 100
    assert entries(area.root) == ["data.csv"]
    up.commit()
    assert (area.root / "data.csv").read_bytes() == b"new" * 100
    assert reader.read() == b"old" * 100  # an open reader keeps its complete version
    reader.close()
    assert entries(area.root) == ["data.csv"]
    assert os.listdir(area.staging) == []


def test_abort_leaves_nothing(area: FileArea) -> None:
    with area.open_upload("sub/dir/x.bin") as up:
        up.write(b"x" * 500)
        assert area.ledger.total() == 500 and len(os.listdir(area.staging)) == 1
    assert [p for p in area.root.rglob("*") if p.is_file()] == []
    assert os.listdir(area.staging) == []
    assert area.ledger.total() == 0


def test_oversize_upload_fails_while_streaming_and_leaves_nothing(area: FileArea) -> None:
    up = area.open_upload("big.bin")
    up.write(b"x" * BLOCK)
    with pytest.raises(FileTooLarge):
        up.write(b"x" * (BLOCK + 1))
    assert entries(area.root) == [] and os.listdir(area.staging) == []
    with pytest.raises(RuntimeError):
        up.commit()
    with pytest.raises(FileTooLarge):
        area.open_upload("big.bin", expected_size=2 * BLOCK + 1)
    with area.open_upload("exact.bin") as up:
        up.write(b"x" * 2 * BLOCK)  # the limit itself is allowed
        up.commit()


def test_quota_counts_every_byte_and_uploads_in_flight(area: FileArea) -> None:
    with area.open_upload("a.bin") as up:
        up.write(b"a" * BLOCK)
        up.commit()
    (area.root / "gen.bin").write_bytes(b"g" * BLOCK)
    (area.root / ".kss-upload-1.part").write_bytes(b"t" * BLOCK)  # any name counts
    assert area.usage() == 3 * BLOCK
    with pytest.raises(QuotaExceeded):
        area.open_upload("b.bin", expected_size=BLOCK + 1)
    up = area.open_upload("b.bin")
    up.write(b"b" * 1000)
    assert area.usage() == 3 * BLOCK + 1000  # bytes in flight count too
    with pytest.raises(QuotaExceeded):
        up.write(b"b" * (BLOCK - 999))
    assert entries(area.root) == [".kss-upload-1.part", "a.bin", "gen.bin"]
    # Replacing a file only needs room for the difference.
    with area.open_upload("a.bin") as up:
        up.write(b"A" * 2 * BLOCK)
        up.commit()
    assert area.usage() == 4 * BLOCK


def test_preallocated_blocks_count(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    path = area.root / "empty-looking"
    path.touch()
    subprocess.run(["fallocate", "--keep-size", "-l", f"{3 * BLOCK}", str(path)], check=True)
    st = path.stat()
    assert st.st_size == 0 and disk_bytes(st) == 3 * BLOCK
    assert area.usage() == 3 * BLOCK


async def test_concurrent_uploads_share_the_quota(areas: FileAreas) -> None:
    first_area, other = areas.area("t1", "alice"), areas.area("t1", "alice")  # two requests
    first = await first_area.aopen_upload("one.bin")
    await first.awrite(b"1" * 2 * BLOCK)
    second = await other.aopen_upload("two.bin")
    await second.awrite(b"2" * BLOCK)
    third = await other.aopen_upload("three.bin")
    await third.awrite(b"3" * BLOCK)
    with pytest.raises(QuotaExceeded):
        await third.awrite(b"3")
    await first_area.acommit(first)
    second.abort()
    assert entries(first_area.root) == ["one.bin"]
    bobs = await areas.area("t1", "bob").aopen_upload("x.bin")  # another user's own quota
    await bobs.awrite(b"b" * 2 * BLOCK)
    bobs.abort()


async def test_download_is_a_private_copy_streamed_in_chunks(area: FileArea) -> None:
    area.max_file_bytes = area.quota = 10**7
    for size in (200_000, 3_000_000):  # copied into memory; copied to an unnamed temp
        data = os.urandom(size)
        await upload(area, "chart.png", data, chunk=65536)
        with await area.aopen_for_download("chart.png") as dl:
            assert (dl.size, dl.mime_type) == (len(data), "image/png")
            assert dl.etag.startswith('"') and (dl.data is None) == (size > 1 << 20)
            (area.root / "chart.png").write_bytes(b"changed")  # the copy is ours
            assert b"".join([c async for c in dl.chunks(65536)]) == data
        assert os.listdir(area.staging) == []
    await upload(area, "notes", b"x")
    with await area.aopen_for_download("notes") as dl:
        assert dl.mime_type == "application/octet-stream"


async def test_a_file_that_keeps_changing_is_busy_not_torn(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    path = area.root / "log.txt"
    path.write_bytes(b"0")
    stop = threading.Event()

    def rewrite() -> None:
        i = 0
        with open(path, "r+b") as f:
            while not stop.is_set():
                i += 1
                f.seek(0)
                f.truncate()
                f.write(b"%d," % i * (i % 50 + 1))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        with pytest.raises(FileBusy, match="kept changing"):
            await area.aopen_for_download("log.txt")
    finally:
        stop.set()
        writer.join()
    with await area.aopen_for_download("log.txt") as dl:  # once it holds still
        body = dl.read(1 << 20)
        first = body.split(b",")[0] + b","
        assert body == first * (len(body) // len(first))


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


async def test_symlinks_are_never_followed(area: FileArea, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    area.root.mkdir(parents=True)
    (area.root / "inside.txt").write_text("fine")
    os.symlink(outside / "secret.txt", area.root / "link.txt")
    os.symlink("inside.txt", area.root / "relative-link.txt")
    os.symlink(outside, area.root / "sub")
    for name in ("link.txt", "relative-link.txt", "sub/secret.txt"):
        with pytest.raises(BadFileName, match="symbolic link"):
            area.open_for_download(name)
    with pytest.raises(BadFileName):
        area.open_upload("sub/new.txt")
    with pytest.raises(BadFileName):
        area.delete("sub/secret.txt")
    assert await names(area) == ["inside.txt"]
    assert area.changes_since(Snapshot({}, 0)) == [FileChange("inside.txt", 4, "created")]
    # Deleting a symlink removes the link, not its target; uploading over one replaces it.
    area.delete("link.txt")
    await upload(area, "relative-link.txt", b"now a file")
    assert (outside / "secret.txt").read_text() == "secret"
    assert (area.root / "inside.txt").read_text() == "fine"
    assert sorted(os.listdir(outside)) == ["secret.txt"]


def test_symlink_swap_during_upload_cannot_escape(area: FileArea, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    up = area.open_upload("sub/file.txt")  # holds an fd of the real sub/
    up.write(b"data")
    (area.root / "sub").rename(area.root / "moved")
    os.symlink(outside, area.root / "sub")
    up.commit()
    assert os.listdir(outside) == []
    assert (area.root / "moved" / "file.txt").read_bytes() == b"data"


def test_a_directory_removed_during_an_upload_is_made_again(area: FileArea) -> None:
    up = area.open_upload("sub/file.txt")
    up.write(b"data")
    (area.root / "sub").rmdir()
    up.commit()
    assert (area.root / "sub" / "file.txt").read_bytes() == b"data"


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


def test_scans_strip_setuid_and_setgid(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    (area.root / "tool").write_text("#!/bin/sh\n")
    os.chmod(area.root / "tool", 0o6755)
    (area.root / "locked").write_text("x")
    os.chmod(area.root / "locked", 0o6111)  # not even readable: stripped all the same
    (area.root / ".d").mkdir()
    os.chmod(area.root / ".d", 0o2775)
    (area.root / "target").write_text("t")
    os.chmod(area.root / "target", 0o4755)
    os.symlink("target", area.root / "link")
    area.changes_since(area.snapshot())
    for name, mode in (("tool", 0o755), ("locked", 0o111), (".d", 0o775), ("target", 0o755)):
        assert stat.S_IMODE(os.lstat(area.root / name).st_mode) == mode, name


def test_overrun_is_growth_past_the_quota(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    empty = area.snapshot()
    (area.root / "a.bin").write_bytes(b"a" * 3 * BLOCK)
    assert area.overrun(empty) is None  # under the quota of 4 blocks
    (area.root / ".cache").mkdir()
    (area.root / ".cache" / "b.bin").write_bytes(b"b" * 2 * BLOCK)  # hidden files count too
    reason = area.overrun(empty)
    assert reason is not None and f"{5 * BLOCK} bytes" in reason
    assert f"quota of {4 * BLOCK}" in reason
    over = area.snapshot()
    assert area.overrun(over) is None  # over quota but not growing: e.g. a long computation
    (area.root / "a.bin").write_bytes(b"a" * 100)
    assert area.overrun(over) is None  # shrinking never is an overrun
    (area.root / "c.bin").write_bytes(b"c" * 4 * BLOCK)
    assert area.overrun(over) is not None


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


async def test_uploads_from_threads_never_expose_partial_files(area: FileArea) -> None:
    area.max_file_bytes = area.quota = 10**7
    versions = [bytes([i]) * 200_000 for i in range(8)]
    await upload(area, "data.bin", versions[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                with area.open_for_download("data.bin") as dl:
                    seen.add(dl.read(10**6))
            except FileBusy:  # replaced too often to prove a version held still: fine
                continue

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for v in versions[1:]:
            await upload(area, "data.bin", v, chunk=4096)
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        reader.join()
    assert seen and seen <= set(versions)
