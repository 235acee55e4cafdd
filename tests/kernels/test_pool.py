"""KernelPool with real kernels: warm spares claimed and refilled, a claimed kernel working
in the user's dir, dead spares replaced, failed starts cleaned up, starts bounded; spares
preloaded without names in the user's namespace, claimed without waiting for it, and used
as they are when it fails."""

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernels import pool as pool_module
from kernels.errors import KernelStartFailed
from kernels.launcher import KernelCommand, LocalLauncher
from kernels.pool import KernelPool
from kernels.preload import DATA_STACK, preload_code
from tests.kernels.driving import execute, local_launcher
from tests.polling import until


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


NAMES = "import json; print(json.dumps(sorted(k for k in get_ipython().user_ns if k[:1] != '_')))"
LOADED = "import sys, json; print(json.dumps([m in sys.modules for m in {mods!r}]))"


async def test_preloaded_spares_import_modules_but_define_no_names(tmp_path: Path):
    plain = KernelPool(local_launcher(), tmp_path / "run-plain", warm_size=1)
    loaded = KernelPool(local_launcher(), tmp_path / "run", warm_size=1, preload=DATA_STACK)
    await plain.start()
    await loaded.start()
    try:
        await plain.wait_warm()
        await loaded.wait_warm()  # started and preloaded
        kernel = await loaded.take(tmp_path)
        baseline = await plain.take(tmp_path)
        names = await execute(kernel, NAMES)
        assert names.reply["execution_count"] == 1  # the preload counts for nothing
        assert names.stdout == (await execute(baseline, NAMES)).stdout
        assert "load_file" in names.stdout and "np" not in names.stdout
        check = LOADED.format(mods=["numpy", "pandas", "matplotlib.pyplot"])
        assert (await execute(kernel, check)).stdout.strip() == "[true, true, true]"
        assert (await execute(baseline, check)).stdout.strip() == "[false, false, false]"
        first = await execute(kernel, "1")  # the preload's figure is never shown
        assert first.result == "1"
        assert not [m for m in first.iopub if m["msg_type"] == "display_data"]
        # As in any notebook: a figure shows at the end of its cell, without plt.show().
        plot = await execute(kernel, "import matplotlib.pyplot as plt\nplt.plot([1, 2])")
        shown = [m for m in plot.iopub if m["msg_type"] == "display_data"]
        assert len(shown) == 1 and "image/png" in shown[0]["content"]["data"]
        assert (await execute(kernel, "plt.isinteractive()")).result == "True"
    finally:
        await plain.close()
        await loaded.close()


async def test_a_claim_does_not_wait_for_the_preload(tmp_path: Path):
    pool = KernelPool(local_launcher(), tmp_path / "run", warm_size=1, preload=("pandas",))
    await pool.start()
    try:
        # Started; its preload (pandas: ~0.5 s) has just been sent.
        await until(lambda: pool._warm, timeout=60, interval=0.005)
        kernel = await pool.take(tmp_path)
        assert kernel in pool._preloading  # claimed while preloading
        # The user's first execution runs after the preload, in the kernel's order.
        check = LOADED.format(mods=["pandas"])
        assert (await execute(kernel, check)).stdout.strip() == "[true]"
        names = (await execute(kernel, NAMES)).stdout
        assert "load_file" in names and "pandas" not in names and "pd" not in names
    finally:
        await pool.close()


async def test_a_failed_preload_is_logged_and_the_kernel_used_as_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    preload = ("kss_no_such_module", "json", "this")  # `this` prints: nobody sees it
    pool = KernelPool(local_launcher(), tmp_path / "run", warm_size=1, preload=preload)
    await pool.start()
    try:
        await pool.wait_warm()
        assert "preload failed" in caplog.text and "kss_no_such_module" in caplog.text
        kernel = await pool.take(tmp_path)
        done = await execute(kernel, LOADED.format(mods=["json", "this"]))
        assert done.stdout == "[true, true]\n" and done.reply["status"] == "ok"
    finally:
        await pool.close()


def test_preload_names_must_be_module_names():
    assert preload_code(("numpy", "matplotlib.pyplot"))
    for bad in ("os; import shutil", "a..b", "", "1abc"):
        with pytest.raises(ValueError):
            preload_code((bad,))


def _nice(kernel) -> set[int]:
    """The nice values of every thread of the kernel's processes."""
    tids = [
        int(tid)
        for pid in kernel.launcher.processes(kernel.slot)
        for tid in os.listdir(f"/proc/{pid}/task")
    ]
    return {os.getpriority(os.PRIO_PROCESS, tid) for tid in tids}


# Whether this Linux groups processes by session for the scheduler (CONFIG_SCHED_AUTOGROUP).
AUTOGROUPS = os.path.exists("/proc/self/autogroup")


def _autogroup_nice(kernel) -> set[int]:
    """The nice of the autogroup of each of the kernel's processes that leads a session
    (`/proc/<pid>/autogroup`: "/autogroup-<n> nice <nice>")."""
    leaders = [p for p in kernel.launcher.processes(kernel.slot) if os.getsid(p) == p]
    assert leaders, "a local kernel is a session of its own"
    return {int(Path(f"/proc/{p}/autogroup").read_text().split()[-1]) for p in leaders}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a kernel its priority back")
async def test_spares_start_below_and_sessions_run_at_normal_priority(tmp_path: Path):
    pool = KernelPool(local_launcher(), tmp_path / "run", warm_size=1, max_starting=1)
    await pool.start()
    try:
        await pool.wait_warm()
        base = os.getpriority(os.PRIO_PROCESS, 0)
        spare_nice = min(19, base + pool_module.SPARE_NICE)
        assert _nice(pool._warm[0]) == {spare_nice}
        # Autogroups share CPU between sessions before nice counts (Debian's default): a
        # spare's own group must be at its nice too, or the spare competes as an equal.
        assert not AUTOGROUPS or _autogroup_nice(pool._warm[0]) == {spare_nice}
        claimed = await pool.take(tmp_path)
        assert _nice(claimed) == {base}
        assert not AUTOGROUPS or _autogroup_nice(claimed) == {base}
        started = await pool.take(tmp_path)  # no spare left: started for this user
        assert _nice(started) == {base}
        assert not AUTOGROUPS or _autogroup_nice(started) == {base}
        assert (await execute(started, "1")).result == "1"
    finally:
        await pool.close()
