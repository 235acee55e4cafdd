"""kernels/hibernate.py with real kernels: what a save keeps and loses (and why), that it
leaves the user's namespace as it was, and what a restore brings back into a fresh kernel:
functions bound to the new namespace, one class for its instances, imports as imports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from kernels import hibernate
from kernels.kernel import Kernel
from tests.kernels.driving import execute, start_local_kernel

STATE = """
import json
import numpy as np
df = {"total": 3}
def total():
    return df["total"]
class Point:
    def __init__(self, x):
        self.x = x
    def twice(self):
        return 2 * self.x
p = Point(4)
points = [Point(1), p]
square = lambda v: v * v
_private = 1
gen = (i for i in range(3))
fh = open(__import__("os").devnull)
arr = np.arange(5)
large = np.ones(200_000)  # pickled out of band of pickle's frames, as a PickleBuffer
"""
NAMES = "sorted(n for n in globals() if not n.startswith('_'))"


@pytest_asyncio.fixture
async def kernels(tmp_path: Path) -> AsyncIterator[list[Kernel]]:
    started = [await start_local_kernel(tmp_path / "run") for _ in range(2)]
    yield started
    for k in started:
        await k.stop()


async def test_save_then_restore_into_a_fresh_kernel(kernels: list[Kernel], tmp_path: Path):
    old, new = kernels
    snapshot = tmp_path / "snap"
    assert (await execute(old, STATE)).reply["status"] == "ok"
    before = (await execute(old, NAMES)).result
    saved = await hibernate.save(old, str(snapshot), 10_000_000, 20)
    assert (await execute(old, NAMES)).result == before  # the save left no name behind
    assert set(saved.saved) == {"df", "total", "Point", "p", "points", "square", "arr", "large"}
    assert saved.imports == ["json", "np"]
    assert saved.lost == [{"name": "gen", "why": "generator"}, {"name": "fh", "why": "open file"}]
    assert 1_600_000 < saved.bytes < 1_700_000

    restore = await hibernate.restore(new, str(snapshot), 20)
    assert set(restore.restored) == set(saved.saved) | {"json", "np"}
    assert {x["name"] for x in restore.lost} == {"gen", "fh"}
    assert not snapshot.exists()  # a restore happens once
    check = (
        "df = {'total': 7}\n"  # the restored function reads the namespace, not a copy
        "(total(), p.twice(), all(isinstance(q, Point) for q in points), square(3), "
        "int(arr.sum() + large.sum()), json.dumps(1))"
    )
    assert (await execute(new, check)).result == "(7, 8, True, 9, 200010, '1')"


async def test_the_caps_lose_only_what_does_not_fit(kernels: list[Kernel], tmp_path: Path):
    old, _ = kernels
    await execute(old, "small = 1\nbig = bytes(200_000)")
    saved = await hibernate.save(old, str(tmp_path / "snap"), 50_000, 20)
    assert saved.saved == ["small"]
    assert saved.lost == [{"name": "big", "why": "too large"}]


async def test_a_restore_without_a_snapshot_fails_and_says_so(kernels: list[Kernel], tmp_path):
    _, new = kernels
    with pytest.raises(hibernate.SnapshotFailed, match="FileNotFoundError"):
        await hibernate.restore(new, str(tmp_path / "none"), 20)
    failed = hibernate.failed_restore("it took too long", ["a"])
    assert failed.failed and failed.restored == []
    assert failed.lost == [
        {
            "name": "a",
            "why": "the restore failed (it took too long); the session goes on in a clean kernel",
        }
    ]
