"""Uploads and downloads (files/transfer.py): atomic replace, nothing left by an abort or
an oversize upload, the quota of uploads in flight, private download copies, a file that
keeps changing, and directories swapped or removed under an upload."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from files.area import FileArea, FileBusy, FileTooLarge, QuotaExceeded
from files.areas import FileAreas
from tests.files.helpers import BLOCK, GOOD, entries, names, upload
from tests.polling import until


@pytest.mark.parametrize("name", GOOD)
async def test_upload_roundtrip_with_unicode_and_nested_names(area: FileArea, name: str) -> None:
    data = name.encode() * 3
    info = await upload(area, name, data)
    assert (info.name, info.size, info.origin) == (name, len(data), "upload")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    with await area.aopen_for_download(name) as dl:
        assert dl.read(10_000) == data
    assert await names(area) == [name]


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
            await until(lambda v=v: v in seen)  # the reader got this version whole
    finally:
        stop.set()
        reader.join()
    assert seen and seen <= set(versions)
