"""files/bundle.py and the file area's hibernation dir: a bundle of the visible files beside
a notebook, read back with every name and size checked; the server's hidden dir kept out
of listings, bundles and file expiry, and removed without following a planted symlink."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from files.area import HIBERNATION_DIR, FileArea
from files.bundle import read_bundle, write_bundle
from files.errors import BadBundle, BadFileName, FileTooLarge, QuotaExceeded
from tests.files.helpers import BLOCK, HOUR, names, upload


def hibernate_into(area: FileArea) -> None:
    """What a kernel leaves when it hibernates: parts, then the manifest."""
    snap = area.root / HIBERNATION_DIR
    snap.mkdir(parents=True)
    (snap / "v1.0").write_bytes(b"p" * 100)
    (snap / "manifest.json").write_text("{}")


async def test_a_bundle_holds_the_notebook_and_the_visible_files(area: FileArea, clock):
    await upload(area, "sales.csv", b"a,b\n1,2\n")
    await upload(area, "out/chart.png", b"\x89PNG")
    hibernate_into(area)
    built = await area.lane.run(
        write_bundle, area.root, area.staging, area.lane, "u.ipynb", b"{}", area.quota
    )
    data = b"".join([chunk async for chunk in built.download.chunks()])
    built.download.close()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["out/chart.png", "sales.csv", "u.ipynb"]
        assert zf.read("sales.csv") == b"a,b\n1,2\n"
    bundle = read_bundle(io.BytesIO(data), area.max_file_bytes, area.quota, 1000)
    assert bundle.notebook == b"{}"
    assert sorted(i.filename for i in bundle.files) == ["out/chart.png", "sales.csv"]


async def test_the_notebook_never_hides_a_file_of_the_same_name(area: FileArea):
    await upload(area, "u.ipynb", b"mine")
    built = await area.lane.run(
        write_bundle, area.root, area.staging, area.lane, "u.ipynb", b"{}", area.quota
    )
    data = b"".join([chunk async for chunk in built.download.chunks()])
    built.download.close()
    assert built.notebook == "u-session.ipynb"
    bundle = read_bundle(io.BytesIO(data), area.max_file_bytes, area.quota, 1000)
    assert bundle.notebook == b"{}" and [i.filename for i in bundle.files] == ["u.ipynb"]


async def test_files_past_the_cap_are_left_out_and_named(area: FileArea):
    await upload(area, "a.bin", b"x" * BLOCK)
    await upload(area, "b.bin", b"y" * BLOCK)
    built = await area.lane.run(
        write_bundle, area.root, area.staging, area.lane, "u.ipynb", b"{}", BLOCK
    )
    built.download.close()
    assert built.omitted == ["b.bin"]


def zip_of(entries: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ({"a.csv": b"x"}, BadBundle),  # no notebook
        ({"a.ipynb": b"{}", "b.ipynb": b"{}"}, BadBundle),  # which one?
        ({"a.ipynb": b"{}", "../x": b"x"}, BadFileName),
        ({"a.ipynb": b"{}", "d/.git/config": b"x"}, BadFileName),
        ({"a.ipynb": b"{}", "big": b"x" * 101}, FileTooLarge),
        ({"a.ipynb": b"{}", "a": b"x" * 60, "b": b"x" * 60}, QuotaExceeded),
        ({"a.ipynb": b"{" * 50}, BadBundle),  # notebook over its limit
    ],
)
def test_reading_a_bundle_checks_names_and_sizes_first(entries, error):
    with pytest.raises(error):
        read_bundle(zip_of(entries), 100, 100, 40)


async def test_the_hibernation_dir_is_hidden_counted_and_kept_from_file_expiry(
    area: FileArea, clock
):
    await upload(area, "old.txt", b"o")
    hibernate_into(area)
    assert await area.ahas_hibernation()
    assert await names(area) == ["old.txt"]
    assert await area.ausage() >= 100
    clock.now += area.ttl_seconds + HOUR
    assert await area.aexpire() == ["old.txt"]
    assert await area.ahas_hibernation()  # it expires with the transcript instead
    await area.adrop_hibernation()
    assert not await area.ahas_hibernation()
    assert not (area.root / HIBERNATION_DIR).exists()


async def test_a_planted_symlink_is_neither_followed_nor_believed(area: FileArea, tmp_path):
    outside = tmp_path / "outside"
    (outside / "hibernate").mkdir(parents=True)
    (outside / "hibernate" / "manifest.json").write_text("{}")
    area.root.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, area.root / ".kss")
    assert not await area.ahas_hibernation()
    await area.adrop_hibernation()
    assert (outside / "hibernate" / "manifest.json").exists()
    os.unlink(area.root / ".kss")
    (area.root / ".kss").mkdir()
    os.symlink(outside / "hibernate", area.root / HIBERNATION_DIR)
    assert not await area.ahas_hibernation()
    await area.adrop_hibernation()  # removes the link, not what it points to
    assert (outside / "hibernate" / "manifest.json").exists()
    left = area.root / HIBERNATION_DIR
    assert not left.is_symlink() and not left.exists()
