"""FairPool: one job per owner at a time, owners take turns, and shutdown never waits on
a stuck job."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from files.pool import FairPool, PoolClosed
from tests.polling import until


async def test_an_owner_runs_one_job_at_a_time_and_others_run_alongside() -> None:
    pool = FairPool(3)
    running: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=10)

    def job(key: str, meet: bool) -> str:
        with lock:
            running[key] += 1
            most[key] = max(most[key], running[key])
        if meet:
            both.wait()  # only returns if a's and b's jobs run at the same time
        time.sleep(0.01)  # the job's work: long enough for the other owner's to overlap
        with lock:
            running[key] -= 1
        return key

    try:
        jobs = [pool.run("a", job, "a", i == 0) for i in range(5)]
        jobs += [pool.run("b", job, "b", i == 0) for i in range(5)]
        assert await asyncio.gather(*jobs) == ["a"] * 5 + ["b"] * 5
        assert most == {"a": 1, "b": 1}
    finally:
        await pool.close()


async def test_owners_take_turns() -> None:
    pool = FairPool(1)
    order: list[str] = []
    gate = threading.Event()
    first_runs = threading.Event()

    def job(name: str) -> None:
        if name == "a0":
            first_runs.set()
            gate.wait(10)
        order.append(name)

    try:
        heavy = [asyncio.ensure_future(pool.run("a", job, f"a{i}")) for i in range(4)]
        await asyncio.sleep(0)
        light = asyncio.ensure_future(pool.run("b", job, "b0"))
        other = asyncio.ensure_future(pool.run("c", job, "c0"))
        await asyncio.sleep(0)  # their first steps queue b's and c's jobs
        await until(first_runs.is_set)
        gate.set()
        await asyncio.gather(*heavy, light, other)
        # Queued behind a's first job, b and c each get the next turn before a's second.
        assert order == ["a0", "b0", "c0", "a1", "a2", "a3"]
    finally:
        await pool.close()


async def test_errors_reach_the_caller_and_a_cancelled_job_is_skipped() -> None:
    pool = FairPool(1)
    gate = threading.Event()
    blocking = threading.Event()
    ran: list[str] = []

    def block() -> None:
        blocking.set()
        gate.wait(10)

    try:
        with pytest.raises(ZeroDivisionError):
            await pool.run("a", lambda: 1 / 0)
        blocker = asyncio.ensure_future(pool.run("a", block))
        skipped = asyncio.ensure_future(pool.run("a", ran.append, "skipped"))
        await asyncio.sleep(0)  # their first steps queue both jobs
        await until(blocking.is_set)  # the blocker runs: the skipped one is queued behind it
        skipped.cancel()
        gate.set()
        await blocker
        pool.submit("a", ran.append, "after")  # runs after everything queued for "a"
        await pool.run("a", ran.append, "last")
        assert ran == ["after", "last"]
    finally:
        await pool.close()


async def test_close_cancels_queued_work_and_does_not_wait_for_a_stuck_job() -> None:
    pool = FairPool(1)
    stuck = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        holding.set()
        stuck.wait(30)

    running = asyncio.ensure_future(pool.run("a", hold))
    queued = asyncio.ensure_future(pool.run("b", time.sleep, 0))
    await asyncio.sleep(0)  # their first steps queue both jobs
    await until(holding.is_set)  # the one worker is stuck in a's job
    began = time.monotonic()
    await pool.close(grace=0.2)
    assert time.monotonic() - began < 5
    with pytest.raises(asyncio.CancelledError):
        await queued
    with pytest.raises(PoolClosed):
        await pool.run("c", time.sleep, 0)
    stuck.set()
    running.cancel()
