"""Leases: which server replica runs a user's kernel, kept in MongoDB beside the store.

One document per (tenant, user) (a unique index): {owner: replica id, url: where the owner
is reached, expires}. A replica takes a lease before it starts the user's kernel, with one
`findOneAndUpdate` that matches only a lease that is expired or already its own, upserting
when there is none: of two replicas racing, one inserts and the other hits the unique key,
so only one ever starts a kernel. The owner renews its leases on a timer and deletes them
when it closes the session; a dead owner's leases expire and the next replica takes them.
`expires` is a date with a TTL index, so MongoDB also removes leases long expired.
Replicas compare `expires` with their own clocks: keep them in sync (NTP).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from .base import StoreUnavailable

CLAIM_TRIES = 3


@dataclass(frozen=True)
class Lease:
    owner: str  # the replica id
    url: str  # where that replica is reached
    expires: float  # unix time
    previous: str = ""  # when this claim took the lease over: the replica that held it


def _now() -> datetime:
    return datetime.now(UTC)


def _lease(doc: dict[str, Any], previous: str = "") -> Lease:
    return Lease(doc["owner"], doc["url"], doc["expires"].timestamp(), previous)


class Leases:
    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self.collection = collection

    async def open(self) -> None:
        await self.collection.create_indexes(
            [
                IndexModel([("tenant", ASCENDING), ("user", ASCENDING)], unique=True, name="key"),
                IndexModel([("expires", ASCENDING)], expireAfterSeconds=0, name="ttl"),
                IndexModel([("owner", ASCENDING)], name="owner"),
            ]
        )

    async def claim(self, tenant: str, user: str, owner: str, url: str, seconds: float) -> Lease:
        """Take (or renew) the user's lease for `seconds`; the lease as it now stands, which
        is another replica's when that one holds it."""
        key = {"tenant": tenant, "user": user}
        try:
            for _ in range(CLAIM_TRIES):
                now = _now()
                try:
                    before = await self.collection.find_one_and_update(
                        {**key, "$or": [{"expires": {"$lte": now}}, {"owner": owner}]},
                        {"$set": {"owner": owner, "url": url, "expires": now + _s(seconds)}},
                        upsert=True,
                        return_document=ReturnDocument.BEFORE,
                    )
                except DuplicateKeyError:  # another replica holds it
                    held = await self.holder(tenant, user)
                    if held is not None:
                        return held
                    continue  # it expired or was released meanwhile: try again
                taken_from = before["owner"] if before and before["owner"] != owner else ""
                return Lease(owner, url, (now + _s(seconds)).timestamp(), taken_from)
        except ConnectionFailure as exc:
            raise StoreUnavailable(f"MongoDB is unreachable: {type(exc).__name__}") from None
        raise StoreUnavailable("the lease kept changing hands")

    async def holder(self, tenant: str, user: str) -> Lease | None:
        """The unexpired lease of the user, if any."""
        try:
            doc = await self.collection.find_one(
                {"tenant": tenant, "user": user, "expires": {"$gt": _now()}}
            )
        except ConnectionFailure as exc:
            raise StoreUnavailable(f"MongoDB is unreachable: {type(exc).__name__}") from None
        return _lease(doc) if doc else None

    async def holders(self, tenant: str) -> dict[str, Lease]:
        """The unexpired leases of the tenant's users, by user."""
        try:
            cursor = self.collection.find({"tenant": tenant, "expires": {"$gt": _now()}})
            return {d["user"]: _lease(d) for d in await cursor.to_list()}
        except ConnectionFailure as exc:
            raise StoreUnavailable(f"MongoDB is unreachable: {type(exc).__name__}") from None

    async def renew(
        self, keys: Iterable[tuple[str, str]], owner: str, seconds: float
    ) -> list[tuple[str, str]]:
        """Extend `owner`'s leases of `keys`; the keys whose lease it no longer holds."""
        lost = []
        try:
            for tenant, user in keys:
                result = await self.collection.update_one(
                    {"tenant": tenant, "user": user, "owner": owner},
                    {"$set": {"expires": _now() + _s(seconds)}},
                )
                if result.matched_count == 0:
                    lost.append((tenant, user))
        except ConnectionFailure as exc:
            raise StoreUnavailable(f"MongoDB is unreachable: {type(exc).__name__}") from None
        return lost

    async def release(self, tenant: str, user: str, owner: str) -> None:
        try:
            await self.collection.delete_one({"tenant": tenant, "user": user, "owner": owner})
        except ConnectionFailure as exc:
            raise StoreUnavailable(f"MongoDB is unreachable: {type(exc).__name__}") from None


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
