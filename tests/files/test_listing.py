"""Listings (files/listing.py): metadata and the records kept in the store, origin from
the file's stamp, pages by name, a bounded walk."""

from __future__ import annotations

import hashlib

import pytest

from files.area import FileArea, QuotaExceeded
from files.paths import MAX_ENTRIES
from tests.files.helpers import HOUR, entries, upload


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
