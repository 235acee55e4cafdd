"""Sessions, the pool and the registry with real kernels, without the web layer."""

import asyncio
import os
import time
from pathlib import Path

import pytest

from kernels.errors import CapacityExceeded, KernelStartFailed, SessionClosed
from kernels.launcher import KernelCommand, LocalLauncher, default_kernel_python
from kernels.pool import KernelPool
from kernels.registry import SessionRegistry
from kernels.session import Limits
from kernels.states import SessionState


@pytest.fixture
async def registry(tmp_path):
    pool = KernelPool(
        LocalLauncher(KernelCommand(default_kernel_python())), tmp_path / "run", warm_size=1
    )
    await pool.start()
    reg = SessionRegistry(
        pool, Limits(default_timeout=20), lambda t, u: tmp_path / "w" / t / u, max_sessions=2
    )
    yield reg
    await reg.close_all()
    await pool.close()
    assert pool.status()["live"] == 0


async def test_claimed_warm_kernel_works_in_the_users_dir(registry, tmp_path):
    await registry.pool.wait_warm()
    warm_id = registry.pool._warm[0].id
    session, created = await registry.ensure("t", "u")
    assert created and session.kernel.id == warm_id  # the warm spare was claimed
    cell = await session.submit("import os; os.getcwd()").done
    assert cell.collector.result == {"text/plain": repr(str(tmp_path / "w" / "t" / "u"))}
    await registry.pool.wait_warm()  # refilled in the background


async def test_concurrent_ensure_creates_one_session(registry):
    results = await asyncio.gather(*(registry.ensure("t", "same") for _ in range(5)))
    assert len({id(s) for s, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_at_capacity_the_least_recently_used_idle_session_is_reclaimed(registry):
    a, _ = await registry.ensure("t", "a")
    b, _ = await registry.ensure("t", "b")
    await a.submit("1").done  # a is now the more recently used
    _, created = await registry.ensure("t", "c")
    assert created and registry.find("t", "b") is None and b.state is SessionState.CLOSED
    assert registry.find("t", "a") is a


async def test_capacity_is_enforced_when_every_session_is_busy(registry):
    a, _ = await registry.ensure("t", "a")
    b, _ = await registry.ensure("u", "b")
    running = [s.submit("import time; time.sleep(30)") for s in (a, b)]
    with pytest.raises(CapacityExceeded, match="all of them are busy"):
        await registry.ensure("t", "c")
    for s in (a, b):
        s.interrupt()
    for execution in running:
        await execution.done


async def test_one_tenant_cannot_take_every_slot(tmp_path):
    pool = KernelPool(
        LocalLauncher(KernelCommand(default_kernel_python())), tmp_path / "run", warm_size=0
    )
    await pool.start()
    reg = SessionRegistry(
        pool,
        Limits(default_timeout=20),
        lambda t, u: tmp_path / "w" / t / u,
        max_sessions=3,
        max_sessions_per_tenant=2,
    )
    try:
        first, _ = await reg.ensure("greedy", "1")
        await reg.ensure("greedy", "2")
        await reg.ensure("greedy", "3")  # the tenant's own LRU session makes room
        assert first.state is SessionState.CLOSED
        assert len(reg.list("greedy")) == 2
        await reg.ensure("polite", "x")  # a free slot: nobody is reclaimed
        assert len(reg.list("greedy")) == 2 and len(reg.list("polite")) == 1
    finally:
        await reg.close_all()
        await pool.close()


async def test_idle_sessions_are_culled_busy_ones_are_not(registry):
    idle, _ = await registry.ensure("t", "idle")
    busy, _ = await registry.ensure("t", "busy")
    busy.submit("import time; time.sleep(2)")
    await asyncio.sleep(0.2)
    culled = await registry.cull_idle(idle_seconds=60, now=time.time() + 3600)
    assert culled == [("t", "idle")]
    assert idle.state is SessionState.CLOSED and busy.state is SessionState.BUSY


async def test_close_fails_queued_executions(registry):
    session, _ = await registry.ensure("t", "closing")
    running = session.submit("import time; time.sleep(10)")
    queued = session.submit("1")
    await asyncio.sleep(0.2)
    await registry.close("t", "closing")
    for execution in (running, queued):
        assert (await execution.done).status == "aborted"
    with pytest.raises(SessionClosed):
        session.submit("1")


async def test_a_kernel_that_cannot_start_fails_cleanly(tmp_path):
    launcher = LocalLauncher(KernelCommand("/bin/false"))
    pool = KernelPool(launcher, tmp_path / "run", warm_size=0, start_timeout=5)
    await pool.start()
    with pytest.raises(KernelStartFailed):
        await pool.take(tmp_path)
    assert list((tmp_path / "run").iterdir()) == []  # its runtime dir is gone
    await pool.close()


async def test_warm_kernel_that_dies_is_replaced(registry):
    pool = registry.pool
    await pool.wait_warm()
    victim = pool._warm[0]
    os.kill(victim.pid, 9)
    await victim.exited
    await pool.wait_warm()
    assert pool._warm[0] is not victim and pool._warm[0].alive


def test_runtime_paths_fit_unix_socket_limit(tmp_path):
    runtime = Path("/tmp") / f"kss-{os.getuid()}-0123456789"
    assert len(f"{runtime}/0123456789ab/s-5") < 107
