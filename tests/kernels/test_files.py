"""FileArea: names, uploads, limits, downloads, change detection, expiry, isolation.

The kernel-facing side (upload then analyse, a generated chart detected) is in
test_startup.py, which runs real kernels.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from kernels.files import (
    BadFileName,
    FileArea,
    FileChange,
    FileExpired,
    FileNotFound,
    FileTooLarge,
    QuotaExceeded,
    validate_name,
)

HOUR = 3600.0


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
def area(tmp_path: Path, clock: Clock) -> FileArea:
    return FileArea(tmp_path / "t1" / "alice", max_file_bytes=1000, quota=2000, clock=clock)


def upload(area: FileArea, name: str, data: bytes, chunk: int = 100):
    with area.open_upload(name) as up:
        for i in range(0, len(data), chunk):
            up.write(data[i : i + chunk])
        return up.commit()


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


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
def test_upload_roundtrip_with_unicode_and_nested_names(area: FileArea, name: str) -> None:
    data = name.encode() * 3
    info = upload(area, name, data)
    assert (info.name, info.size, info.origin) == (name, len(data), "upload")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    with area.open_for_download(name) as dl:
        assert dl.read(10_000) == data
    assert [f.name for f in area.list()] == [name]


def test_list_metadata_and_records_live_outside_the_work_dir(area: FileArea) -> None:
    info = upload(area, "sales.csv", b"region,amount\nnorth,10\n")
    (area.root / "chart.png").write_bytes(b"\x89PNG fake")
    listed = {f.name: f for f in area.list()}
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
    assert area.records.path.parent == area.root.parent
    assert entries(area.root) == ["chart.png", "sales.csv"]
    assert area.records.get("chart.png") is not None  # hash cached


def test_code_rewriting_an_upload_makes_it_generated(area: FileArea) -> None:
    upload(area, "data.csv", b"a\n1\n")
    (area.root / "data.csv").write_bytes(b"a\n1\n2\n")
    [info] = area.list()
    assert info.origin == "generated"
    assert info.sha256 == hashlib.sha256(b"a\n1\n2\n").hexdigest()


def test_replace_is_atomic(area: FileArea) -> None:
    upload(area, "data.csv", b"old" * 100)
    reader = open(area.root / "data.csv", "rb")
    up = area.open_upload("data.csv")
    up.write(b"new" * 100)
    # Mid-upload the name still holds the whole old file.
    assert (area.root / "data.csv").read_bytes() == b"old" * 100
    up.commit()
    assert (area.root / "data.csv").read_bytes() == b"new" * 100
    assert reader.read() == b"old" * 100  # an open reader keeps its complete version
    reader.close()
    assert entries(area.root) == ["data.csv"]


def test_abort_leaves_nothing(area: FileArea) -> None:
    with area.open_upload("sub/dir/x.bin") as up:
        up.write(b"x" * 500)
    assert [p for p in area.root.rglob("*") if p.is_file()] == []
    assert area.ledger.total() == 0


def test_oversize_upload_fails_while_streaming_and_leaves_nothing(area: FileArea) -> None:
    up = area.open_upload("big.bin")
    up.write(b"x" * 600)
    with pytest.raises(FileTooLarge):
        up.write(b"x" * 600)
    assert entries(area.root) == []
    with pytest.raises(RuntimeError):
        up.commit()
    with pytest.raises(FileTooLarge):
        area.open_upload("big.bin", expected_size=1001)
    upload(area, "exact.bin", b"x" * 1000)  # the limit itself is allowed


def test_quota_counts_existing_and_generated_files(area: FileArea) -> None:
    upload(area, "a.bin", b"a" * 900)
    (area.root / "gen.bin").write_bytes(b"g" * 900)
    with pytest.raises(QuotaExceeded):
        area.open_upload("b.bin", expected_size=300)
    up = area.open_upload("b.bin")
    up.write(b"b" * 200)
    with pytest.raises(QuotaExceeded):
        up.write(b"b" * 1)
    assert entries(area.root) == ["a.bin", "gen.bin"]
    # Replacing a file only needs room for the difference.
    upload(area, "a.bin", b"A" * 1000)
    assert area.usage() == 1900


def test_concurrent_uploads_share_the_quota(area: FileArea, tmp_path: Path) -> None:
    area.quota = 1500
    other = FileArea(area.root, max_file_bytes=1000, quota=1500)  # another request's view
    first = area.open_upload("one.bin")
    first.write(b"1" * 1000)
    second = other.open_upload("two.bin")
    second.write(b"2" * 500)
    with pytest.raises(QuotaExceeded):
        second.write(b"2")
    first.commit()
    assert entries(area.root) == ["one.bin"]


def test_download_stream_and_content_type(area: FileArea) -> None:
    data = os.urandom(200_000)
    area.max_file_bytes = area.quota = 10**6
    upload(area, "chart.png", data, chunk=65536)
    with area.open_for_download("chart.png") as dl:
        assert (dl.size, dl.mime_type) == (len(data), "image/png")
        assert dl.etag.startswith('"')
    with area.open_for_download("chart.png") as dl:
        import asyncio

        async def collect() -> bytes:
            return b"".join([c async for c in dl.chunks(65536)])

        assert asyncio.run(collect()) == data
    upload(area, "notes", b"x")
    with area.open_for_download("notes") as dl:
        assert dl.mime_type == "application/octet-stream"


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
    assert area.list() == []


def test_symlinks_are_never_followed(area: FileArea, tmp_path: Path) -> None:
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
    assert [f.name for f in area.list()] == ["inside.txt"]
    assert area.changes_since({}) == [FileChange("inside.txt", 4, "created")]
    # Deleting a symlink removes the link, not its target; uploading over one replaces it.
    area.delete("link.txt")
    upload(area, "relative-link.txt", b"now a file")
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


def test_other_tenants_and_users_are_unreachable(tmp_path: Path) -> None:
    a = FileArea(tmp_path / "tenant-a" / "alice")
    b = FileArea(tmp_path / "tenant-b" / "alice")
    c = FileArea(tmp_path / "tenant-a" / "bob")
    upload(b, "secret.csv", b"b's data")
    upload(c, "secret.csv", b"bob's data")
    attempts = [
        "../../tenant-b/alice/secret.csv",
        "../bob/secret.csv",
        str(tmp_path / "tenant-b" / "alice" / "secret.csv"),
        "..%2Fbob%2Fsecret.csv",  # not decoded here: just a missing name
        "secret.csv",
    ]
    for name in attempts:
        with pytest.raises((BadFileName, FileNotFound)):
            a.open_for_download(name)
    os.makedirs(a.root, exist_ok=True)
    os.symlink(b.root / "secret.csv", a.root / "via-link.csv")
    with pytest.raises(BadFileName):
        a.open_for_download("via-link.csv")
    assert a.list() == []
    assert a.records.path != b.records.path


def test_changes_since_sees_created_and_modified_not_hidden(area: FileArea) -> None:
    upload(area, "keep.csv", b"1")
    upload(area, "edit.csv", b"1")
    before = area.snapshot()
    (area.root / "edit.csv").write_bytes(b"22")
    (area.root / "chart.png").write_bytes(b"png")
    (area.root / "out").mkdir()
    (area.root / "out" / "report.txt").write_bytes(b"r")
    (area.root / ".ipynb_checkpoints").mkdir()
    (area.root / ".ipynb_checkpoints" / "x.csv").write_bytes(b"x")
    (area.root / ".hidden").write_bytes(b"h")
    with area.open_upload("pending.bin") as up:
        up.write(b"p")  # a temp file mid-upload is not a change
        assert area.changes_since(before) == [
            FileChange("chart.png", 3, "created"),
            FileChange("edit.csv", 2, "modified"),
            FileChange("out/report.txt", 1, "created"),
        ]
    assert area.changes_since(area.snapshot()) == []


def test_overrun_is_growth_past_the_quota(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    empty = area.snapshot()
    (area.root / "a.bin").write_bytes(b"a" * 1500)
    assert area.overrun(empty) is None  # under the 2000-byte quota
    (area.root / ".cache").mkdir()
    (area.root / ".cache" / "b.bin").write_bytes(b"b" * 1000)  # hidden files count too
    reason = area.overrun(empty)
    assert reason is not None and "2500 bytes" in reason and "quota of 2000" in reason
    over = area.snapshot()
    assert area.overrun(over) is None  # over quota but not growing: e.g. a long computation
    (area.root / "a.bin").write_bytes(b"a" * 100)
    assert area.overrun(over) is None  # shrinking never is an overrun
    (area.root / "c.bin").write_bytes(b"c" * 2000)
    assert area.overrun(over) is not None


def test_expiry_with_an_injected_clock(area: FileArea, clock: Clock) -> None:
    upload(area, "old.csv", b"old")
    upload(area, "dir/old.txt", b"old")
    clock.now += 47 * HOUR
    assert area.expire() == []
    with area.open_for_download("old.csv"):
        pass
    clock.now += 2 * HOUR
    (area.root / "fresh.csv").write_bytes(b"new")
    os.utime(area.root / "fresh.csv", (clock.now, clock.now))
    up = area.open_upload("incoming.csv")
    up.write(b"in flight")
    temp = next(p for p in area.root.iterdir() if p.name.startswith(".kss-upload-"))
    os.utime(temp, (0, 0))  # old, but an upload in progress owns it
    with pytest.raises(FileExpired, match="expired"):
        area.open_for_download("old.csv")  # 404 naming expiry, before the janitor runs
    assert area.expire() == ["dir/old.txt", "old.csv"]
    assert temp.exists()
    up.commit()
    assert sorted(f.name for f in area.list()) == ["fresh.csv", "incoming.csv"]
    assert area.records.get("old.csv") is None
    assert not (area.root / "dir").exists() or list((area.root / "dir").iterdir()) == []


def test_async_wrappers(area: FileArea) -> None:
    import asyncio

    async def run() -> None:
        before = await area.asnapshot()
        upload(area, "x.csv", b"1")
        assert [c.name for c in await area.achanges_since(before)] == ["x.csv"]
        assert [f.name for f in await area.alist()] == ["x.csv"]
        assert (await area.ainfo("x.csv")).origin == "upload"
        assert await area.aexpire() == []

    asyncio.run(run())


def test_uploads_from_threads_never_expose_partial_files(area: FileArea) -> None:
    area.max_file_bytes = area.quota = 10**7
    versions = [bytes([i]) * 200_000 for i in range(8)]
    upload(area, "data.bin", versions[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            with area.open_for_download("data.bin") as dl:
                seen.add(dl.read(10**6))

    reader = threading.Thread(target=read)
    reader.start()
    for v in versions[1:]:
        upload(area, "data.bin", v, chunk=4096)
    stop.set()
    reader.join()
    assert seen <= set(versions)
