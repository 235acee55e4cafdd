"""The bind mounts that bring a claimed user's work dir into a running sandbox (root mode),
made for real in a tmp dir and always detached again."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernels.sandbox import mounts


def mountinfo(point: Path) -> tuple[set[str], set[str]]:
    """(per-mount options, optional fields such as `shared:N`) of the topmost mount at
    `point` in this namespace."""
    found: tuple[set[str], set[str]] | None = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left = line.partition(" - ")[0].split()
            if left[4].replace("\\040", " ") == str(point):
                found = set(left[5].split(",")), set(left[6:])
    assert found is not None, f"{point} is not a mount point"
    return found


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    yield tmp_path
    for point in mounts.mounts_under(tmp_path):
        with contextlib.suppress(OSError):
            mounts.umount(point)
    assert mounts.mounts_under(tmp_path) == [], "a mount was left behind"


def test_mounts_under_lists_a_tree_deepest_first_and_nothing_beside_it(base: Path) -> None:
    outer, inner, beside = base / "a", base / "a" / "b", base / "ab"
    for d in (inner, beside):
        d.mkdir(parents=True)
    for d in (outer, inner, beside):
        mounts.mount(str(d), str(d), mounts.MS_BIND)
    assert mounts.mounts_under(outer) == [str(inner), str(outer)]
    assert mounts.mounts_under(base) == [str(inner), str(beside), str(outer)]
    assert mounts.mounts_under(base / "nothing") == []


def test_bind_host_shows_the_work_dir_nosuid_nodev_and_replaces_an_earlier_one(
    base: Path,
) -> None:
    first, second, slot, stage = (base / n for n in ("work-1", "work-2", "slot", "stage"))
    for d in (first, second, slot):
        d.mkdir()
    (first / "one.csv").write_text("1")
    (second / "two.csv").write_text("2")
    mounts.bind_host(first, slot, stage)
    assert sorted(os.listdir(slot)) == ["one.csv"] and not stage.exists()
    options, _ = mountinfo(slot)
    assert {"nosuid", "nodev"} <= options
    (slot / "made.txt").write_text("by the kernel")
    assert (first / "made.txt").read_text() == "by the kernel"  # the same files, not a copy
    mounts.bind_host(second, slot, stage)  # the kernel is claimed by another user
    assert sorted(os.listdir(slot)) == ["two.csv"]
    assert mounts.mounts_under(slot) == [str(slot)]  # the first bind is gone, not stacked
    mounts.unbind_host(slot)
    assert mounts.mounts_under(slot) == [] and os.listdir(slot) == []
    assert sorted(os.listdir(first)) == ["made.txt", "one.csv"]  # untouched by the unbind
    mounts.unbind_host(slot)  # nothing mounted: nothing to do


def test_unbind_host_detaches_every_mount_stacked_on_the_slot(base: Path) -> None:
    slot = base / "slot"
    slot.mkdir()
    for i in range(3):
        (base / f"w{i}").mkdir()
        mounts.mount(str(base / f"w{i}"), str(slot), mounts.MS_BIND)
    assert len([p for p in mounts.mounts_under(slot) if p == str(slot)]) == 3
    mounts.unbind_host(slot)
    assert mounts.mounts_under(slot) == []


def test_a_shared_root_is_a_mount_of_its_own_that_propagates(base: Path) -> None:
    root = base / "mnt"
    root.mkdir()
    mounts.make_shared_root(root)
    _, fields = mountinfo(root)
    assert any(f.startswith("shared:") for f in fields)
    mounts.make_shared_root(root)  # again: still one mount, not a second bind
    assert mounts.mounts_under(root) == [str(root)]
