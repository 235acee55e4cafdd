"""SessionRegistry with real kernels: one session per (tenant, user), capacity with LRU
reclaim of idle sessions, per-tenant caps, idle culling, and a failed start cleaned up."""

import asyncio
import time

import pytest

from kernels.errors import CapacityExceeded, KernelStartFailed, SessionElsewhere
from kernels.launcher import KernelCommand, LocalLauncher
from kernels.limits import Limits
from kernels.observer import NoObserver
from kernels.pool import KernelPool
from kernels.registry import SessionRegistry
from kernels.session import KernelSession
from kernels.states import SessionState
from tests.kernels.driving import local_launcher
from tests.polling import until


class Heard(NoObserver):
    """An observer that notes every session change it hears of."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, SessionState]] = []

    async def session_changed(self, session: KernelSession) -> None:
        self.changes.append((session.user, session.state))


@pytest.fixture
async def registry(tmp_path):
    pool = KernelPool(local_launcher(), tmp_path / "run", warm_size=1)
    await pool.start()
    reg = SessionRegistry(
        pool,
        Limits(default_timeout=20),
        lambda t, u: tmp_path / "w" / t / u,
        Heard(),
        max_sessions=2,
    )
    yield reg
    await reg.close_all()
    await pool.close()
    assert pool.status()["live"] == 0


async def test_concurrent_ensure_creates_one_session(registry):
    results = await asyncio.gather(*(registry.ensure("t", "same") for _ in range(5)))
    assert len({id(s) for s, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_at_capacity_the_least_recently_used_idle_session_is_reclaimed(registry):
    heard = registry.observer.changes
    a, _ = await registry.ensure("t", "a")
    b, _ = await registry.ensure("t", "b")
    await a.submit("1").done  # a is now the more recently used
    _, created = await registry.ensure("t", "c")
    assert created and registry.find("t", "b") is None and b.state is SessionState.CLOSED
    assert registry.find("t", "a") is a
    assert [user for user, _ in heard] == ["a", "b", "b", "c"]  # created, ..., closed
    assert heard[2] == ("b", SessionState.CLOSED)


async def test_capacity_is_enforced_when_every_session_is_busy(registry):
    a, _ = await registry.ensure("t", "a")
    b, _ = await registry.ensure("u", "b")
    running = [s.submit("import time; time.sleep(30)") for s in (a, b)]
    with pytest.raises(CapacityExceeded, match="all of them are busy"):
        await registry.ensure("t", "c")
    for s in (a, b):
        await until(s.interrupt)  # True once the execution runs: the interrupt then lands
    for execution in running:
        assert (await execution.done).status == "error"


async def test_one_tenant_cannot_take_every_slot(tmp_path):
    pool = KernelPool(local_launcher(), tmp_path / "run", warm_size=0)
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
    await until(lambda: busy.state is SessionState.BUSY)
    culled = await registry.cull_idle(idle_seconds=60, now=time.time() + 3600)
    assert culled == [("t", "idle")]
    assert idle.state is SessionState.CLOSED and busy.state is SessionState.BUSY
    assert await registry.cull_idle(idle_seconds=60) == []  # nobody idle that long now


async def test_a_session_whose_kernel_cannot_start_is_not_kept(tmp_path):
    pool = KernelPool(
        LocalLauncher(KernelCommand("/bin/false")), tmp_path / "run", warm_size=0, start_timeout=5
    )
    await pool.start()
    reg = SessionRegistry(pool, Limits(), lambda t, u: tmp_path / "w" / t / u, max_sessions=1)
    try:
        for _ in range(2):  # the slot is free again for the next attempt
            with pytest.raises(KernelStartFailed):
                await reg.ensure("t", "u")
            assert reg.count() == 0 and reg.find("t", "u") is None
    finally:
        await reg.close_all()
        await pool.close()


class OneUserHere:
    """A gate that lets this server run every user but `elsewhere`, and notes its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def claim(self, tenant: str, user: str) -> None:
        self.calls.append(("claim", user))
        if user == "elsewhere":
            raise SessionElsewhere("another server runs it", "http://other")

    async def release(self, tenant: str, user: str) -> None:
        self.calls.append(("release", user))


async def test_the_gate_is_asked_before_a_kernel_starts_and_told_when_it_stops(tmp_path):
    pool = KernelPool(local_launcher(), tmp_path / "run", warm_size=0)
    await pool.start()
    gate = OneUserHere()
    reg = SessionRegistry(pool, Limits(), lambda t, u: tmp_path / "w" / t / u, gate=gate)
    try:
        with pytest.raises(SessionElsewhere) as refused:
            await reg.ensure("t", "elsewhere")
        assert refused.value.where == "http://other"
        assert reg.find("t", "elsewhere") is None and pool.status()["live"] == 0
        await reg.ensure("t", "here")
        assert reg.keys() == [("t", "here")]
        await reg.close("t", "here")
        assert gate.calls == [("claim", "elsewhere"), ("claim", "here"), ("release", "here")]
    finally:
        await reg.close_all()
        await pool.close()
