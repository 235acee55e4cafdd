"""cgroups as the sandbox uses them: the mount table read from /proc/self/mountinfo, each
controller's hierarchy (v1 or v2), and, as root where cgroups are writable, a tree for a
test instance with real processes in a kernel's group, held to its limits and killed by
`destroy`. Everything created is removed again."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernels.launcher import is_zombie
from kernels.sandbox import cgroups, mounts
from kernels.sandbox.cgroups import CgroupTree, KernelCgroup, find_hierarchies
from tests.polling import until

PARENT = "kss-tests"
MEMORY = 64 << 20
# Joins the groups named after the script, then runs the script in this same shell.
JOIN = 'for f in "$@"; do echo $$ > "$f" || exit 97; done; eval "$0"'


def decode(field: str) -> str:
    return field.replace("\\040", " ")


def test_mountinfo_lists_what_proc_mounts_lists() -> None:
    rows = cgroups._mountinfo()
    with open("/proc/self/mounts") as f:
        listed = {(decode(line.split()[1]), line.split()[2]) for line in f}
    assert {(point, fstype) for point, fstype, _opts in rows} == listed
    assert any(point == "/" for point, _t, _o in rows)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_mount_points_with_spaces_are_decoded(tmp_path: Path) -> None:
    point = tmp_path / "a dir with spaces"
    point.mkdir()
    mounts.mount(str(point), str(point), mounts.MS_BIND)
    try:
        assert str(point) in [p for p, _t, _o in cgroups._mountinfo()]
    finally:
        mounts.umount(str(point))
    assert str(point) not in [p for p, _t, _o in cgroups._mountinfo()]


def test_each_controller_is_found_where_it_is_mounted() -> None:
    rows = {point: (fstype, opts) for point, fstype, opts in cgroups._mountinfo()}
    found = find_hierarchies()
    for name, h in found.items():
        assert h.controller == name and name in cgroups.CONTROLLERS + cgroups.OPTIONAL
        fstype, opts = rows[str(h.mount)]
        if h.version == 2:
            assert fstype == "cgroup2"
            assert name in (h.mount / "cgroup.controllers").read_text().split()
        else:
            assert fstype == "cgroup" and name in opts.split(",")
            offered_by_v2 = [
                p for p, (t, _o) in rows.items() if t == "cgroup2" and name in _controllers(Path(p))
            ]
            assert offered_by_v2 == []  # a v2 mount offering it would have won


def _controllers(mount: Path) -> list[str]:
    try:
        return (mount / "cgroup.controllers").read_text().split()
    except OSError:
        return []


# -- a tree of our own ---------------------------------------------------------------------


@pytest.fixture
def tree() -> Iterator[CgroupTree]:
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    instance = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    made = CgroupTree.create(PARENT, instance)
    if made is None or not {"memory", "pids"} <= set(made.hierarchies):
        pytest.skip("no writable memory and pids cgroups here")
    try:
        yield made
    finally:
        again = CgroupTree.create(PARENT, instance)  # as the server's cleanup does
        assert again is not None
        again.remove_leftovers()
        for h in made.hierarchies.values():
            assert not (h.mount / made.relative).exists(), "the instance group was left"
            with contextlib.suppress(OSError):  # another run may use the parent right now
                (h.mount / PARENT).rmdir()


@contextlib.contextmanager
def in_group(group: KernelCgroup, script: str) -> Iterator[subprocess.Popen[bytes]]:
    """`sh -c script`, started inside `group` from its first instruction (as the launch
    wrapper joins it); killed and reaped on exit."""
    proc = subprocess.Popen(
        ["sh", "-c", JOIN, script, *group.procs_files], stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def limit_files(group: KernelCgroup) -> dict[str, str]:
    values = {}
    for controller, (path, version) in group.paths.items():
        if controller == "memory":
            name = "memory.max" if version == 2 else "memory.limit_in_bytes"
            values["memory"] = (path / name).read_text().strip()
        elif controller == "pids":
            values["pids"] = (path / "pids.max").read_text().strip()
        elif controller == "cpu":
            if version == 2:
                values["cpu"] = (path / "cpu.max").read_text().strip()
            else:
                quota = (path / "cpu.cfs_quota_us").read_text().strip()
                period = (path / "cpu.cfs_period_us").read_text().strip()
                values["cpu"] = f"{quota} {period}"
    return values


def test_a_kernel_group_carries_its_limits(tree: CgroupTree) -> None:
    group = tree.kernel("k-limits", MEMORY, pids_max=4, cpus=0.5)
    try:
        expected = {"memory": str(MEMORY), "pids": "4"}
        if "cpu" in group.paths:
            expected["cpu"] = "50000 100000"
        assert limit_files(group) == expected
        dirs = {path for path, _v in group.paths.values()}
        assert sorted(str(d / "cgroup.procs") for d in dirs) == group.procs_files
        for controller, (path, _v) in group.paths.items():
            assert path == tree.hierarchies[controller].mount / tree.relative / "k-limits"
        assert all(part in tree.description for part in tree.hierarchies)
        assert group.pids() == set() and group.pids_limit_hits() == 0
        assert group.oom_kills() == 0
    finally:
        group.destroy()
    assert not any(path.exists() for path, _v in group.paths.values())


async def test_a_process_in_the_group_is_counted_and_destroy_kills_it(tree: CgroupTree) -> None:
    group = tree.kernel("k-sleeper", MEMORY, pids_max=16, cpus=0)
    with in_group(group, "exec sleep 60") as proc:
        await until(lambda: group.pids() == {proc.pid})
        path, version = group.paths["memory"]
        if version == 1 or (path / "memory.peak").exists():  # v2: since Linux 5.19
            # The peak shows once the kernel has charged the group for the process' pages.
            peak = await until(lambda: group.memory_peak(), 10)
            assert 0 < peak <= MEMORY
        group.destroy()
        assert proc.wait(timeout=10) == -9
    assert group.pids() == set()
    assert not any(path.exists() for path, _v in group.paths.values())


async def test_the_pids_limit_refuses_a_fork_storm_and_counts_it(tree: CgroupTree) -> None:
    group = tree.kernel("k-storm", MEMORY, pids_max=4, cpus=0)
    storm = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 60 & done; exec sleep 60"
    with in_group(group, storm):  # the shell gives up at its first refused fork
        await until(lambda: group.pids_limit_hits() > 0)
        inside = group.pids()
        assert 1 <= len(inside) <= 4, inside
        group.destroy()
        assert all(is_zombie(pid) for pid in inside)  # killed (a zombie until reaped)
    assert not any(path.exists() for path, _v in group.paths.values())


async def test_leftovers_of_a_previous_run_are_killed_and_removed(tree: CgroupTree) -> None:
    groups = [tree.kernel(f"k-left-{i}", MEMORY, pids_max=8, cpus=0) for i in range(2)]
    with in_group(groups[0], "exec sleep 60") as a, in_group(groups[1], "exec sleep 60") as b:
        await until(lambda: groups[0].pids() == {a.pid} and groups[1].pids() == {b.pid})
        again = CgroupTree(tree.hierarchies, tree.relative)  # the server, restarted
        assert again.remove_leftovers() == 2  # kernels, not groups (one per hierarchy)
        assert a.wait(timeout=10) == b.wait(timeout=10) == -9
    for h in tree.hierarchies.values():
        assert not (h.mount / tree.relative).exists()
