"""MongoDB store, on PyMongo's async client (`pymongo.AsyncMongoClient`; motor is
deprecated in its favour): what the SQLite store keeps, in a database several server
replicas share.

Collections, each with a unique index on its key, created at `open`:

- `sessions` (tenant, user): one record per user; `last_activity` indexed for expiry.
- `cells` (tenant, user, id): outputs as a list of JSON strings (late outputs are pushed
  onto it), metadata as JSON: what a kernel prints (mime types with dots, any text) is kept
  byte for byte, never taken for field names. `position` is "order of first insertion":
  each `put_cells` reserves a block of positions from one counter document (`counters`,
  one `$inc`) and gives them to the cells it inserts (`$setOnInsert`), so an updated cell
  keeps its place.
- `events` (tenant, user, seq): written with ordered `insert_many`, one round trip a batch.
- `files` (tenant, user, name): file records and expiry marks.
- `leases` (tenant, user): which replica runs a user's kernel (`leases.py`).

Every write can be repeated (a batch that was half applied when the server went away is
written again whole): records are upserts, events skip a seq already stored, late outputs
carry a token that is pushed once. When MongoDB cannot be reached, every call raises
`StoreUnavailable`. Expiry stays the janitor's (a transcript goes with its files, and only
when no replica runs the user), so sessions, cells and events have no TTL index; leases do.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    IndexModel,
    ReturnDocument,
    UpdateOne,
)
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError

from files.listing import FileRecord

from .base import Batch, CellRecord, SessionRecord, StoreUnavailable, write_each
from .leases import Leases

MAX_EXPIRED = 10_000  # names remembered as expired per user, newest kept (as in SQLite)
IN_BATCH = 1000  # names per `$in`
APPENDS_KEPT = 64  # tokens of late-output appends remembered per cell (repeats come soon)
SELECTION_TIMEOUT_MS = 3000  # how long a call waits for an unreachable server
OPERATION_TIMEOUT_MS = 20_000  # an answer on an open connection (a hung server)
URI_PASSWORD_RE = re.compile(r"(://[^:/@]*:)[^@/]*@")

SESSION_FIELDS = ("created", "last_activity", "execution_count", "state", "kernel_id")


def masked(uri: str) -> str:
    """`uri` with its password replaced by `***`, for messages and logs."""
    return URI_PASSWORD_RE.sub(r"\1***@", uri)


def uri_password(uri: str) -> str:
    """The password in `uri`, "" if none: for log redaction."""
    found = URI_PASSWORD_RE.search(uri)
    return found.group(0)[len(found.group(1)) : -1] if found else ""


def _index(*keys: str, unique: bool = False, **kw: Any) -> IndexModel:
    return IndexModel([(k, ASCENDING) for k in keys], unique=unique, **kw)


INDEXES: dict[str, list[IndexModel]] = {
    "sessions": [
        _index("tenant", "user", unique=True, name="key"),
        _index("last_activity", name="last_activity"),
    ],
    "cells": [
        _index("tenant", "user", "id", unique=True, name="key"),
        _index("tenant", "user", "position", name="order"),
        _index("status", name="status"),
    ],
    "events": [_index("tenant", "user", "seq", unique=True, name="key")],
    "files": [
        _index("tenant", "user", "name", unique=True, name="key"),
        _index("tenant", "user", "expired_at", name="expired"),
    ],
}


def _session(doc: dict[str, Any]) -> SessionRecord:
    return SessionRecord(doc["tenant"], doc["user"], *(doc[f] for f in SESSION_FIELDS))


def _cell(doc: dict[str, Any]) -> CellRecord:
    return CellRecord(
        doc["tenant"],
        doc["user"],
        doc["id"],
        doc["kind"],
        doc["source"],
        doc["created"],
        doc["status"],
        doc["execution_count"],
        [json.loads(o) for o in doc["outputs"]],
        json.loads(doc["metadata"]),
        doc["first_seq"],
        doc["position"],
    )


def _outputs(outputs: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(o, ensure_ascii=False) for o in outputs]


def _file_record(doc: dict[str, Any]) -> FileRecord:
    stamp = (doc["mtime_ns"], doc["size"], doc["inode"])
    return FileRecord(doc["name"], stamp, doc["origin"], doc["sha256"])


def _batches(names: Sequence[str]) -> list[Sequence[str]]:
    return [names[i : i + IN_BATCH] for i in range(0, len(names), IN_BATCH)]


@contextlib.asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    """PyMongo's "no server, or the connection broke" as `StoreUnavailable`."""
    try:
        yield
    except ConnectionFailure as exc:  # AutoReconnect, NetworkTimeout, ServerSelectionTimeout
        raise StoreUnavailable(f"MongoDB is unreachable: {type(exc).__name__}") from None


class MongoStore:
    backend = "mongodb"

    def __init__(self, uri: str, database: str = "kss") -> None:
        self.uri = uri
        self.database = database
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]] | None = None
        self.leases: Leases | None = None  # for replicas sharing this database

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        assert self._db is not None, "store is not open"
        return self._db

    async def open(self) -> None:
        """Connect and create the indexes; `RuntimeError` naming the URI (password masked)
        when no server answers."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.uri,
            serverSelectionTimeoutMS=SELECTION_TIMEOUT_MS,
            connectTimeoutMS=SELECTION_TIMEOUT_MS,
            socketTimeoutMS=OPERATION_TIMEOUT_MS,
            tz_aware=True,
            appname="kss",
        )
        try:
            await client.admin.command("ping")
            db = client[self.database]
            for name, indexes in INDEXES.items():
                await db[name].create_indexes(indexes)
            leases = Leases(db["leases"])
            await leases.open()
        except PyMongoError as exc:
            await client.close()
            reason = (
                f"no server answered within {SELECTION_TIMEOUT_MS / 1000:g} s"
                if isinstance(exc, ConnectionFailure)
                else f"{type(exc).__name__}: {str(exc)[:200]}"
            )
            raise RuntimeError(f"MongoDB at {masked(self.uri)} is unusable ({reason})") from None
        self._client, self._db, self.leases = client, db, leases

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = self._db = self.leases = None

    # -- sessions --------------------------------------------------------------------------

    async def put_session(self, record: SessionRecord) -> None:
        key = {"tenant": record.tenant, "user": record.user}
        fields = {f: getattr(record, f) for f in SESSION_FIELDS}
        async with _reachable():
            await self.db.sessions.replace_one(key, {**key, **fields}, upsert=True)

    async def get_session(self, tenant: str, user: str) -> SessionRecord | None:
        async with _reachable():
            doc = await self.db.sessions.find_one({"tenant": tenant, "user": user})
        return _session(doc) if doc else None

    async def list_sessions(self, tenant: str) -> list[SessionRecord]:
        async with _reachable():
            docs = await self.db.sessions.find({"tenant": tenant}).sort("user").to_list()
        return [_session(d) for d in docs]

    async def delete_session(self, tenant: str, user: str) -> bool:
        async with _reachable():
            result = await self.db.sessions.delete_one({"tenant": tenant, "user": user})
        return result.deleted_count > 0

    async def expired_sessions(self, before: float) -> list[SessionRecord]:
        async with _reachable():
            docs = await self.db.sessions.find({"last_activity": {"$lt": before}}).to_list()
        return [_session(d) for d in docs]

    async def status(self, tenant: str) -> dict[str, Any]:
        async with _reachable():
            sessions = await self.db.sessions.count_documents({"tenant": tenant})
            cells = await self.db.cells.count_documents({"tenant": tenant})
        return {"backend": self.backend, "sessions": sessions, "cells": cells}

    # -- transcript ------------------------------------------------------------------------

    async def _positions(self, count: int) -> int:
        """The first of `count` fresh positions."""
        counter = await self.db.counters.find_one_and_update(
            {"_id": "cell_position"},
            {"$inc": {"n": count}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(counter["n"]) - count + 1

    async def write_batch(self, batch: Batch) -> None:
        await write_each(self, batch)

    async def put_cells(self, cells: list[CellRecord]) -> None:
        if not cells:
            return
        async with _reachable():
            first = await self._positions(len(cells))
            writes = [
                UpdateOne(
                    {"tenant": c.tenant, "user": c.user, "id": c.id},
                    {
                        "$set": {
                            "status": str(c.status),
                            "execution_count": c.execution_count,
                            "outputs": _outputs(c.outputs),
                            "metadata": json.dumps(c.metadata),
                        },
                        "$setOnInsert": {
                            "kind": c.kind,
                            "source": c.source,
                            "created": c.created,
                            "first_seq": c.first_seq,
                            "position": first + i,
                            "appends": [],
                        },
                    },
                    upsert=True,
                )
                for i, c in enumerate(cells)
            ]
            await self.db.cells.bulk_write(writes, ordered=True)

    async def append_outputs(
        self, tenant: str, user: str, cell_id: str, outputs: list[dict[str, Any]]
    ) -> None:
        token = uuid.uuid4().hex
        async with _reachable():
            await self.db.cells.update_one(
                {"tenant": tenant, "user": user, "id": cell_id, "appends": {"$ne": token}},
                {
                    "$push": {
                        "outputs": {"$each": _outputs(outputs)},
                        "appends": {"$each": [token], "$slice": -APPENDS_KEPT},
                    }
                },
            )

    async def list_cells(self, tenant: str, user: str) -> list[CellRecord]:
        async with _reachable():
            cursor = self.db.cells.find({"tenant": tenant, "user": user}).sort("position")
            docs = await cursor.to_list()
        return [_cell(d) for d in docs]

    async def running_cells(self) -> list[CellRecord]:
        async with _reachable():
            docs = await self.db.cells.find({"status": "running"}).sort("position").to_list()
        return [_cell(d) for d in docs]

    async def append_events(self, tenant: str, user: str, events: list[tuple[int, str]]) -> None:
        docs = [{"tenant": tenant, "user": user, "seq": seq, "body": b} for seq, b in events]
        async with _reachable():
            while docs:
                try:
                    await self.db.events.insert_many(docs, ordered=True)
                    return
                except BulkWriteError as exc:
                    error = exc.details["writeErrors"][0]
                    if error["code"] != 11000:  # not "this seq is stored already"
                        raise
                    at = error["index"]  # written again (a retried batch): replaced, as SQLite
                    key = {k: docs[at][k] for k in ("tenant", "user", "seq")}
                    await self.db.events.update_one(key, {"$set": {"body": docs[at]["body"]}})
                    docs = docs[at + 1 :]

    async def events_between(
        self, tenant: str, user: str, after: int, before: int
    ) -> list[tuple[int, str]]:
        query = {"tenant": tenant, "user": user, "seq": {"$gt": after, "$lt": before}}
        async with _reachable():
            docs = await self.db.events.find(query, {"seq": 1, "body": 1}).sort("seq").to_list()
        return [(int(d["seq"]), d["body"]) for d in docs]

    async def last_seq(self, tenant: str, user: str) -> int:
        async with _reachable():
            doc = await self.db.events.find_one(
                {"tenant": tenant, "user": user}, {"seq": 1}, sort=[("seq", DESCENDING)]
            )
        return int(doc["seq"]) if doc else 0

    async def delete_transcript(self, tenant: str, user: str) -> None:
        async with _reachable():
            for name in ("cells", "events"):
                await self.db[name].delete_many({"tenant": tenant, "user": user})

    # -- file records ----------------------------------------------------------------------

    async def file_records(
        self, tenant: str, user: str, names: Sequence[str]
    ) -> dict[str, FileRecord]:
        found: dict[str, FileRecord] = {}
        async with _reachable():
            for batch in _batches(list(names)):
                query = {"tenant": tenant, "user": user, "name": {"$in": list(batch)}}
                async for doc in self.db.files.find({**query, "expired_at": None}):
                    found[doc["name"]] = _file_record(doc)
        return found

    async def file_records_in(
        self, tenant: str, user: str, after: str, upto: str
    ) -> dict[str, FileRecord]:
        query = {"tenant": tenant, "user": user, "name": {"$gt": after, "$lte": upto}}
        async with _reachable():
            docs = await self.db.files.find({**query, "expired_at": None}).to_list()
        return {d["name"]: _file_record(d) for d in docs}

    async def put_file_records(
        self, tenant: str, user: str, records: Sequence[FileRecord], drop: Sequence[str] = ()
    ) -> None:
        # Deletes, then one ordered insert: not a transaction (a standalone server has
        # none), but the records are a cache checked against each file's stamp, so a
        # half-applied write costs a hash, never a wrong answer; repeated, it is whole.
        key = {"tenant": tenant, "user": user}
        docs = [
            {
                **key,
                "name": r.name,
                "mtime_ns": r.stamp[0],
                "size": r.stamp[1],
                "inode": r.stamp[2],
                "origin": r.origin,
                "sha256": r.sha256,
                "expired_at": None,
            }
            for r in records
        ]
        async with _reachable():
            await self._replace_files(key, [*drop, *(r.name for r in records)], docs)

    async def _replace_files(
        self, key: dict[str, str], names: Sequence[str], docs: list[dict[str, Any]]
    ) -> None:
        """Delete the documents of `names`, then insert `docs` (in order, one round trip
        per thousand: far quicker than an upsert each)."""
        for batch in _batches(list(names)):
            await self.db.files.delete_many({**key, "name": {"$in": list(batch)}})
        if docs:
            await self.db.files.insert_many(docs, ordered=True)

    async def drop_file_records(
        self, tenant: str, user: str, names: Sequence[str] | None = None
    ) -> int:
        key = {"tenant": tenant, "user": user}
        async with _reachable():
            if names is None:
                return (await self.db.files.delete_many(key)).deleted_count
            dropped = 0
            for batch in _batches(list(names)):
                result = await self.db.files.delete_many({**key, "name": {"$in": list(batch)}})
                dropped += result.deleted_count
        return dropped

    async def mark_files_expired(
        self, tenant: str, user: str, names: Sequence[str], when: float, forget_before: float
    ) -> None:
        key = {"tenant": tenant, "user": user}
        files = self.db.files
        async with _reachable():
            await files.delete_many({**key, "expired_at": {"$lt": forget_before}})
            marks = [{**key, "name": n, "expired_at": when} for n in dict.fromkeys(names)]
            await self._replace_files(key, list(names), marks)
            marked = {**key, "expired_at": {"$ne": None}}
            old = files.find(marked, {"name": 1}).sort("expired_at", DESCENDING).skip(MAX_EXPIRED)
            forget = [d["name"] for d in await old.to_list()]
            for batch in _batches(forget):
                await files.delete_many({**marked, "name": {"$in": list(batch)}})

    async def file_expired_at(self, tenant: str, user: str, name: str) -> float | None:
        async with _reachable():
            doc = await self.db.files.find_one({"tenant": tenant, "user": user, "name": name})
        return doc.get("expired_at") if doc else None
