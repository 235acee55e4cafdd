"""WorkDirs: opaque work dir names that name neither tenant nor user, the owner written
beside each, and the move of the earlier `<tenant>/<user>` layout."""

from __future__ import annotations

import re
from pathlib import Path

from files.work_dirs import WorkDirs

SECRET = b"a test secret"


def test_a_work_dir_is_an_opaque_stable_name_under_the_root(tmp_path: Path) -> None:
    dirs = WorkDirs(tmp_path / "work", SECRET)
    path = dirs.path("acme", "alice")
    assert path.parent == tmp_path / "work" and re.fullmatch(r"[0-9a-f]{32}", path.name)
    assert "acme" not in str(path) and "alice" not in str(path)
    assert not path.exists()  # made by whoever uses it first
    assert dirs.path("acme", "alice") == path
    assert WorkDirs(tmp_path / "work", SECRET).path("acme", "alice") == path  # after a restart
    others = {
        dirs.path("acme", "bob"),
        dirs.path("other", "alice"),
        dirs.path("acm", "ealice"),  # the same letters split elsewhere
        WorkDirs(tmp_path / "work", b"another secret").path("acme", "alice"),
    }
    assert path not in others and len(others) == 4


def test_the_owner_is_written_beside_the_dir_once(tmp_path: Path) -> None:
    dirs = WorkDirs(tmp_path / "work", SECRET)
    path = dirs.path("acme", "alice")
    owner = path.with_name(path.name + ".owner")
    assert owner.read_text() == "acme\nalice\n"
    owner.write_text("acme\nalice\n")  # untouched by later calls, even of a new instance
    mtime = owner.stat().st_mtime_ns
    WorkDirs(tmp_path / "work", SECRET).path("acme", "alice")
    assert owner.stat().st_mtime_ns == mtime


def test_owners_are_those_whose_dir_exists(tmp_path: Path) -> None:
    dirs = WorkDirs(tmp_path / "work", SECRET)
    assert WorkDirs(tmp_path / "none", SECRET).owners() == []
    dirs.path("t1", "alice").mkdir()
    dirs.path("t2", "bob").mkdir()
    dirs.path("t1", "carol")  # named, never made
    assert sorted(dirs.owners()) == [("t1", "alice"), ("t2", "bob")]


def test_the_earlier_layout_is_moved_over_once(tmp_path: Path) -> None:
    legacy = tmp_path / "files"
    for tenant, user in [("t1", "alice"), ("t1", "bob"), ("t2", "alice")]:
        (legacy / tenant / user).mkdir(parents=True)
        (legacy / tenant / user / "data.csv").write_text(f"{tenant}/{user}")
    dirs = WorkDirs(tmp_path / "work", SECRET)
    taken = dirs.path("t2", "alice")
    taken.mkdir()  # already in the new layout: kept, the legacy copy left alone
    assert dirs.adopt_legacy(legacy) == 2
    assert (dirs.path("t1", "alice") / "data.csv").read_text() == "t1/alice"
    assert (dirs.path("t1", "bob") / "data.csv").read_text() == "t1/bob"
    assert list(taken.iterdir()) == []
    assert sorted(p.relative_to(legacy).as_posix() for p in legacy.rglob("*")) == [
        "t2",
        "t2/alice",
        "t2/alice/data.csv",
    ]
    assert sorted(dirs.owners()) == [("t1", "alice"), ("t1", "bob"), ("t2", "alice")]
    assert dirs.adopt_legacy(legacy) == 0


def test_an_emptied_legacy_tree_is_removed(tmp_path: Path) -> None:
    legacy = tmp_path / "files"
    (legacy / "t1" / "alice").mkdir(parents=True)
    (legacy / "t2").mkdir()  # a tenant without users
    dirs = WorkDirs(tmp_path / "work", SECRET)
    assert dirs.adopt_legacy(legacy) == 1
    assert not legacy.exists()
    assert dirs.adopt_legacy(legacy) == 0  # nothing there at all
