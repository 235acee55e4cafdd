"""KernelPool with real kernels: warm spares claimed and refilled, a claimed kernel working
in the user's dir, dead spares replaced, failed starts cleaned up, starts bounded."""

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernels import pool as pool_module
from kernels.errors import KernelStartFailed
from kernels.launcher import KernelCommand, LocalLauncher
from kernels.pool import KernelPool
from tests.kernels.driving import execute, local_launcher


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[KernelPool]:
    p = KernelPool(local_launcher(), tmp_path / "run", warm_size=1)
    await p.start()
    yield p
    await p.close()
    assert p.status()["live"] == 0
    assert not (tmp_path / "run").exists()


async def test_a_claimed_warm_kernel_works_in_the_users_dir(pool: KernelPool, tmp_path: Path):
    await pool.wait_warm()
    warm_id = pool._warm[0].id
    work = tmp_path / "w" / "t" / "u"
    work.mkdir(parents=True)
    kernel = await pool.take(work)
    assert kernel.id == warm_id  # the warm spare was claimed
    assert (await execute(kernel, "import os; os.getcwd()")).result == repr(str(work))
    await pool.wait_warm()  # refilled in the background
    assert pool.status() == {"warm": 1, "warm_target": 1, "live": 2}
    await pool.discard(kernel)
    assert not kernel.alive and pool.status()["live"] == 1


async def test_a_kernel_that_cannot_start_fails_cleanly(tmp_path):
    launcher = LocalLauncher(KernelCommand("/bin/false"))
    pool = KernelPool(launcher, tmp_path / "run", warm_size=0, start_timeout=5)
    await pool.start()
    with pytest.raises(KernelStartFailed):
        await pool.take(tmp_path)
    assert list((tmp_path / "run").iterdir()) == []  # its runtime dir is gone
    await pool.close()


async def test_warm_kernel_that_dies_is_replaced(pool: KernelPool):
    await pool.wait_warm()
    victim = pool._warm[0]
    os.kill(victim.pid, 9)
    await victim.exited
    await pool.wait_warm()
    assert pool._warm[0] is not victim and pool._warm[0].alive


async def test_pool_starts_no_more_than_its_limit_at_once(tmp_path, monkeypatch) -> None:
    """Three users arrive together at a pool with no spares and room for one start."""
    starting = 0
    most = 0
    real_start = pool_module.Kernel.start

    async def counted_start(*args, **kwargs):
        nonlocal starting, most
        starting += 1
        most = max(most, starting)
        try:
            return await real_start(*args, **kwargs)
        finally:
            starting -= 1

    monkeypatch.setattr(pool_module.Kernel, "start", counted_start)
    launcher = local_launcher()
    pool = KernelPool(launcher, tmp_path / "run", warm_size=0, max_starting=1)
    await pool.start()
    try:
        dirs = [tmp_path / f"w{i}" for i in range(3)]
        for d in dirs:
            d.mkdir()
        kernels = await asyncio.gather(*(pool.take(d) for d in dirs))
        assert most == 1 and len({k.id for k in kernels}) == 3
        for kernel in kernels:
            assert kernel.alive
    finally:
        await pool.close()
