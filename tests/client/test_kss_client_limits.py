"""The server's 429 and 503 reach the caller as `KssError` with the server's code, and the
model as one plain line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from conftest import UIDS, sandbox_mode
from kss_client import Client, ExecutionStatus, KssError, Session, explain

from tests.conftest import KEY, RunningServer, make_settings, running_server
from tests.polling import until


async def is_busy(session: Session) -> bool:
    return (await session.info()).state == "busy"


async def has_one_queued(session: Session) -> bool:
    return (await session.info()).queued == 1


@pytest_asyncio.fixture(scope="module")
async def small(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    """A server with room for two sessions and one queued execution per session."""
    tmp = tmp_path_factory.mktemp("kss-small")
    settings = make_settings(tmp, sandbox=sandbox_mode(), max_queue=1, max_sessions=2, **UIDS)
    async with running_server(settings) as srv:
        yield srv


async def test_a_full_queue_is_429_queue_full(small: RunningServer) -> None:
    async with Client(small.base, KEY) as c:
        s = c.session("queue")
        await s.ensure()
        running = asyncio.create_task(s.run("import time\nwhile True: time.sleep(0.05)"))
        queued = asyncio.create_task(s.run("'second'"))
        await until(lambda: has_one_queued(s))
        with pytest.raises(KssError) as err:
            await s.run("'third'")
        assert (err.value.status, err.value.code) == (429, "queue_full")
        assert "did not run" in explain(err.value)
        await s.interrupt()
        assert (await running).status is ExecutionStatus.ERROR
        assert (await queued).result == {"text/plain": "'second'"}
        await s.close()


async def test_no_room_for_a_session_is_503_capacity_exceeded(small: RunningServer) -> None:
    # At capacity the server reclaims an idle session; only when every one is busy is a new
    # one refused.
    async with Client(small.base, KEY) as c:
        for info in await c.sessions():
            await c.session(info.user).close()
        busy = [c.session("one"), c.session("two")]
        for s in busy:
            await s.ensure()
        running = [asyncio.create_task(s.run("import time\ntime.sleep(60)")) for s in busy]
        for s in busy:
            await until(lambda s=s: is_busy(s))
        with pytest.raises(KssError) as err:
            await c.session("three").run("1")
        assert (err.value.status, err.value.code) == (503, "capacity_exceeded")
        assert "at capacity" in explain(err.value)
        for s in busy:
            await s.interrupt()
        await asyncio.gather(*running)
