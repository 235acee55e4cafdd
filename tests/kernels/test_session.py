"""KernelSession with real kernels from a pool: the queue, timeouts, interrupts, restarts,
a kernel's death, and closing with work queued."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from kernels.errors import QueueFull, SessionClosed
from kernels.limits import Limits
from kernels.pool import KernelPool
from kernels.session import KernelSession
from kernels.states import SessionState
from tests.kernels.driving import local_launcher
from tests.polling import until

LIMITS = Limits(default_timeout=20, interrupt_grace=2)
MakeSession = Callable[..., KernelSession]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KernelPool]:
    p = KernelPool(local_launcher(), tmp_path_factory.mktemp("run"), warm_size=1)
    await p.start()
    yield p
    await p.close()
    assert p.status()["live"] == 0


@pytest.fixture
async def make_session(pool: KernelPool, tmp_path: Path) -> AsyncIterator[MakeSession]:
    """Sessions of tenant `t` on the module's pool (the registry's job in the server),
    closed after the test."""
    made: list[KernelSession] = []

    def make(user: str = "u", limits: Limits = LIMITS) -> KernelSession:
        work = tmp_path / user
        work.mkdir(exist_ok=True)
        session = KernelSession("t", user, work, pool, limits)
        made.append(session)
        return session

    yield make
    for session in made:
        await session.close()


def events_of(session: KernelSession, since: int = 0) -> list[dict]:
    return [json.loads(raw) for raw in session.events.replay(since)]


async def test_executions_run_in_order_and_say_where_they_wait(make_session: MakeSession):
    session = make_session()
    await session.ensure_kernel()
    assert session.state is SessionState.IDLE
    first = session.submit("'first'", exec_id="a")
    second = session.submit("'second'", exec_id="b")  # submitted while a has not begun
    third = session.submit("'third'", exec_id="c")
    cells = [await e.done for e in (first, second, third)]
    assert [c.collector.result for c in cells] == [
        {"text/plain": "'first'"},
        {"text/plain": "'second'"},
        {"text/plain": "'third'"},
    ]
    assert [c.execution_count for c in cells] == [1, 2, 3] and session.execution_count == 3
    queued = [(e["id"], e["position"]) for e in events_of(session) if e["type"] == "queued"]
    assert queued == [("b", 1), ("c", 2)]
    assert [e["id"] for e in events_of(session) if e["type"] == "done"] == ["a", "b", "c"]
    assert not any(c.kernel_restarted for c in cells)
    info = session.info()
    assert (info["user"], info["state"], info["queued"], info["execution_count"]) == (
        "u",
        "idle",
        0,
        3,
    )


async def test_a_full_queue_refuses_more(make_session: MakeSession):
    session = make_session(limits=Limits(default_timeout=20, max_queue=2))
    session.submit("1")
    session.submit("2")  # nothing ran yet: both wait
    with pytest.raises(QueueFull, match="2 executions"):
        session.submit("3")


async def test_a_timeout_interrupts_and_the_kernel_keeps_its_state(make_session: MakeSession):
    session = make_session()
    await session.submit("x = 41").done
    cell = await session.submit("import time; time.sleep(30)", timeout=1).done
    assert cell.status == "timeout"
    after = await session.submit("x + 1").done
    assert after.collector.result == {"text/plain": "42"} and not after.kernel_restarted


async def test_an_interrupt_stops_the_running_execution(make_session: MakeSession):
    session = make_session()
    await session.ensure_kernel()
    assert session.interrupt() is False  # nothing runs
    running = session.submit("import time; time.sleep(30)")
    await until(session.interrupt)  # True once it runs; held until the kernel began it
    cell = await running.done
    assert cell.status == "error" and cell.collector.error is not None
    assert cell.collector.error["ename"] == "KeyboardInterrupt"
    assert session.state is SessionState.IDLE


async def test_a_kernel_that_dies_is_reported_and_the_next_execution_gets_a_new_one(
    make_session: MakeSession,
):
    session = make_session()
    await session.submit("x = 1").done
    died = await session.submit("import os; os._exit(3)").done
    assert died.status == "error" and died.collector.error is not None
    assert died.collector.error["ename"] == "KernelDied"
    assert session.state is SessionState.DEAD
    after = await session.submit("'x' in dir()").done
    assert after.collector.result == {"text/plain": "False"} and after.kernel_restarted
    assert after.kernel_id != died.kernel_id and session.state is SessionState.IDLE


async def test_restart_aborts_the_running_execution(make_session: MakeSession):
    session = make_session()
    running = session.submit("import time; time.sleep(30)")
    await until(lambda: session.state is SessionState.BUSY)
    await session.restart()
    cell = await running.done
    assert cell.status == "aborted"
    after = await session.submit("1").done
    assert after.status == "ok" and after.kernel_restarted


async def test_close_fails_queued_executions(make_session: MakeSession):
    session = make_session("closing")
    running = session.submit("import time; time.sleep(10)")
    queued = session.submit("1")
    await until(lambda: session.state is SessionState.BUSY)  # the first one runs
    await session.close()
    for execution in (running, queued):
        assert (await execution.done).status == "aborted"
    with pytest.raises(SessionClosed):
        session.submit("1")
    assert session.state is SessionState.CLOSED and session.kernel is None


async def test_an_interrupt_right_after_submit_reaches_that_execution(make_session: MakeSession):
    session = make_session("eager")
    await session.ensure_kernel()
    execution = session.submit("import time\ntime.sleep(30)")
    assert session.interrupt() is True  # not yet taken by the worker: held for its run
    cell = await execution.done
    assert cell.status == "error" and cell.collector.error["ename"] == "KeyboardInterrupt"
    assert session.interrupt() is False  # nothing runs or waits now
