"""Leases (transcript/store/leases.py) on a real MongoDB wire-protocol server: one holder
per user however many replicas race, taken over only once expired, renewed and released by
their owner alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.mongo import database_name
from tests.polling import until
from transcript.store.leases import Leases
from transcript.store.mongo import MongoStore


@pytest.fixture
async def leases(mongo_uri: str) -> AsyncIterator[Leases]:
    store = MongoStore(mongo_uri, database_name())
    await store.open()
    assert store.leases is not None
    try:
        yield store.leases
    finally:
        await store.db.client.drop_database(store.database)
        await store.close()


async def test_of_replicas_racing_for_a_user_one_holds_the_lease(leases: Leases) -> None:
    got = await asyncio.gather(
        *(leases.claim("t", "u", f"r{i % 4}", f"http://r{i % 4}", 30) for i in range(20))
    )
    assert len({lease.owner for lease in got}) == 1
    holder = await leases.holder("t", "u")
    assert holder is not None and holder.owner == got[0].owner
    assert holder.url == f"http://{holder.owner}" and holder.expires > time.time() + 20


async def test_a_lease_is_taken_over_only_once_expired(leases: Leases) -> None:
    first = await leases.claim("t", "u", "a", "http://a", 0.3)
    assert (first.owner, first.previous) == ("a", "")
    assert (await leases.claim("t", "u", "b", "http://b", 30)).owner == "a"
    assert (await leases.claim("t", "u", "a", "http://a", 0.3)).owner == "a"  # renewed
    await until(lambda: _expired(leases))
    taken = await leases.claim("t", "u", "b", "http://b", 30)
    # `previous` names a; "" only if MongoDB's TTL monitor removed the expired lease first
    assert taken.owner == "b" and taken.previous in ("a", "")
    assert await leases.renew([("t", "u")], "a", 30) == [("t", "u")]  # a lost it
    assert await leases.renew([("t", "u")], "b", 30) == []
    await leases.release("t", "u", "a")  # not a's to release
    assert (await leases.holder("t", "u")).owner == "b"  # type: ignore[union-attr]
    await leases.release("t", "u", "b")
    assert await leases.holder("t", "u") is None
    assert (await leases.claim("t", "u", "a", "http://a", 30)).previous == ""


async def _expired(leases: Leases) -> bool:
    return await leases.holder("t", "u") is None


async def test_holders_are_the_tenants_unexpired_leases(leases: Leases) -> None:
    await leases.claim("t", "u1", "a", "http://a", 30)
    await leases.claim("t", "u2", "b", "http://b", 30)
    await leases.claim("other", "u3", "a", "http://a", 30)
    held = await leases.holders("t")
    assert {user: lease.owner for user, lease in held.items()} == {"u1": "a", "u2": "b"}
