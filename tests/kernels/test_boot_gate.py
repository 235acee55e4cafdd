"""The boot gate: a bound on kernels starting at once, sessions' starts before refills."""

import asyncio

import pytest

from kernels.boot_gate import BACKGROUND, URGENT, BootGate
from tests.polling import until

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_at_most_limit_holders_and_urgent_first() -> None:
    gate = BootGate(2)
    order: list[str] = []
    inside = 0
    most = 0
    release = asyncio.Event()

    async def hold(name: str, priority: int) -> None:
        nonlocal inside, most
        async with gate.slot(priority):
            inside += 1
            most = max(most, inside)
            order.append(name)
            await release.wait()
            inside -= 1

    first = [asyncio.create_task(hold(f"first-{i}", URGENT)) for i in range(2)]
    await asyncio.sleep(0)
    later = [asyncio.create_task(hold("refill", BACKGROUND))]
    await asyncio.sleep(0)
    later += [asyncio.create_task(hold(f"user-{i}", URGENT)) for i in range(2)]
    await until(lambda: gate.waiting == 3)
    assert order == ["first-0", "first-1"]
    release.set()
    await asyncio.gather(*first, *later)
    assert most == 2
    assert order[2:] == ["user-0", "user-1", "refill"]  # waiting users before the refill
    assert gate.running == 0 and gate.waiting == 0


async def test_background_waits_while_a_session_start_runs() -> None:
    gate = BootGate(3)
    done = asyncio.Event()
    entered: list[str] = []

    async def hold(name: str, priority: int) -> None:
        async with gate.slot(priority):
            entered.append(name)
            await done.wait()

    user = asyncio.create_task(hold("user", URGENT))
    await asyncio.sleep(0)
    refill = asyncio.create_task(hold("refill", BACKGROUND))
    await until(lambda: gate.waiting == 1)
    assert entered == ["user"] and gate.running == 1  # two slots free, yet the refill waits
    late = asyncio.create_task(hold("late user", URGENT))
    await until(lambda: len(entered) == 2)
    assert entered == ["user", "late user"]  # a waiting refill does not hold a user back
    done.set()
    await asyncio.gather(user, refill, late)
    assert entered == ["user", "late user", "refill"] and gate.running == 0


async def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    gate = BootGate(1)
    held = asyncio.Event()
    done = asyncio.Event()

    async def holder() -> None:
        async with gate.slot():
            held.set()
            await done.wait()

    task = asyncio.create_task(holder())
    await held.wait()
    waiter = asyncio.create_task(gate.slot().__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    done.set()
    await task
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with asyncio.timeout(1):  # the slot is free again, not leaked to the cancelled one
        async with gate.slot():
            assert gate.running == 1
    assert gate.running == 0
