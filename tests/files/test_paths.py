"""The rules of files/paths.py, at every door of the area: names, symbolic links never
followed, blocks on disk, set-id bits stripped by scans."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from files.area import BadFileName, FileArea, FileChange, Snapshot, validate_name
from files.paths import disk_bytes
from tests.files.helpers import BAD, BLOCK, GOOD, names, upload


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


def test_preallocated_blocks_count(area: FileArea) -> None:
    area.root.mkdir(parents=True)
    path = area.root / "empty-looking"
    path.touch()
    subprocess.run(["fallocate", "--keep-size", "-l", f"{3 * BLOCK}", str(path)], check=True)
    st = path.stat()
    assert st.st_size == 0 and disk_bytes(st) == 3 * BLOCK
    assert area.usage() == 3 * BLOCK


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
