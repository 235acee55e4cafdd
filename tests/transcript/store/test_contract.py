"""The store contract (`transcript.store.base.Store`): sessions, transcript cells and
events, file records, per tenant and user, against a real store of each backend.

Every contract test takes the `store` fixture, parametrised by backend: SQLite in a tmp
dir, and MongoDB in a database of its own on the run's wire-protocol server (`mongo_uri`:
`secantusd-py`, or the real `mongod` that `KSS_TEST_MONGODB_URI` names). What only one
backend does (SQLite's file and migration, MongoDB's indexes and repeatable writes) is at
the end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from files.listing import FileRecord
from tests.mongo import database_name
from transcript.store.base import Batch, CellRecord, SessionRecord, Store
from transcript.store.mongo import MongoStore
from transcript.store.sqlite import MAX_EXPIRED, SqliteStore


def open_sqlite(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "kss.sqlite3")


def open_mongodb(uri: str) -> MongoStore:
    return MongoStore(uri, database_name())


BACKENDS = ["sqlite", "mongodb"]


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, mongo_uri: str
) -> AsyncIterator[Store]:
    s: Store = open_sqlite(tmp_path) if request.param == "sqlite" else open_mongodb(mongo_uri)
    await s.open()
    try:
        yield s
    finally:
        # A MongoDB test's database has a name of its own and goes with the run's server:
        # dropping it (10,000 records for the expiry test) stalled the Python wire server
        # past the next tests' 3 s connect timeout on a loaded machine.
        await s.close()


@pytest.fixture
def backend(store: Store, request: pytest.FixtureRequest) -> str:
    return request.node.callspec.params["store"]


# -- sessions ------------------------------------------------------------------------------


def session(tenant: str, user: str, last: float = 100.0, **kw: object) -> SessionRecord:
    return SessionRecord(tenant, user, created=10.0, last_activity=last, **kw)  # type: ignore[arg-type]


async def test_sessions_put_get_replace_and_delete(store: Store) -> None:
    record = session("t", "u", execution_count=3, state="idle", kernel_id="k-1")
    await store.put_session(record)
    assert await store.get_session("t", "u") == record
    assert await store.get_session("t", "other") is None
    assert await store.get_session("other", "u") is None
    newer = session("t", "u", last=200.0, execution_count=4, state="closed", kernel_id="k-2")
    await store.put_session(newer)  # one record per (tenant, user): replaced
    assert await store.get_session("t", "u") == newer
    assert await store.delete_session("t", "u") is True
    assert await store.get_session("t", "u") is None
    assert await store.delete_session("t", "u") is False


async def test_sessions_are_listed_per_tenant_by_user(store: Store) -> None:
    for tenant, user in [("t", "bob"), ("t", "alice"), ("other", "carol"), ("t", "dave")]:
        await store.put_session(session(tenant, user))
    assert [r.user for r in await store.list_sessions("t")] == ["alice", "bob", "dave"]
    assert [r.user for r in await store.list_sessions("other")] == ["carol"]
    assert await store.list_sessions("nobody") == []


async def test_expired_sessions_are_older_than_the_cutoff_in_every_tenant(store: Store) -> None:
    await store.put_session(session("t", "old", last=50.0, kernel_id="k-old"))
    await store.put_session(session("u", "old", last=99.9))
    await store.put_session(session("t", "edge", last=100.0))
    await store.put_session(session("t", "new", last=150.0))
    expired = await store.expired_sessions(100.0)
    assert sorted((r.tenant, r.user) for r in expired) == [("t", "old"), ("u", "old")]
    assert {r.kernel_id for r in expired} == {"k-old", ""}


def test_a_session_record_in_public_names_neither_tenant_nor_kernel() -> None:
    record = session("t", "u", execution_count=2, state="idle", kernel_id="k-1")
    assert record.public() == {
        "user": "u",
        "created": 10.0,
        "last_activity": 100.0,
        "execution_count": 2,
        "state": "idle",
    }


# -- transcript cells ----------------------------------------------------------------------


def cell(cid: str, user: str = "u", tenant: str = "t", **kw: object) -> CellRecord:
    base: dict[str, object] = {"kind": "code", "source": f"# {cid}", "created": 1.0}
    return CellRecord(tenant, user, cid, **{**base, **kw})  # type: ignore[arg-type]


STREAM = {"output_type": "stream", "name": "stdout", "text": "ünïcødé ✓ 🚀\n"}


async def test_cells_are_listed_in_order_of_first_insertion(store: Store) -> None:
    await store.put_cells([cell("c1"), cell("n1", kind="markdown", source="# note")])
    await store.put_cells([cell("c2", execution_count=1, outputs=[STREAM], first_seq=7)])
    await store.put_cells([cell("c1", user="other")])
    cells = await store.list_cells("t", "u")
    assert [c.id for c in cells] == ["c1", "n1", "c2"]
    assert cells[0].position < cells[1].position < cells[2].position
    assert cells[1].kind == "markdown" and cells[1].source == "# note"
    c2 = cells[2]
    assert (c2.execution_count, c2.outputs, c2.first_seq) == (1, [STREAM], 7)
    assert [c.id for c in await store.list_cells("t", "other")] == ["c1"]
    assert await store.list_cells("other", "u") == []


async def test_an_updated_cell_keeps_its_place(store: Store) -> None:
    running = cell("c1", status="running", metadata={"started": 1.0, "id": "e1"}, first_seq=3)
    await store.put_cells([running, cell("c2")])
    done = cell(
        "c1",
        status="error",
        execution_count=5,
        outputs=[STREAM],
        metadata={"started": 1.0, "duration_ms": 2.5, "kernel_id": "k", "id": "e1"},
        first_seq=3,
    )
    await store.put_cells([done])
    first, second = await store.list_cells("t", "u")
    assert first.id == "c1" and second.id == "c2"
    assert (first.status, first.execution_count, first.outputs) == ("error", 5, [STREAM])
    assert first.metadata == done.metadata and first.source == "# c1"


async def test_running_cells_of_every_tenant_are_found(store: Store) -> None:
    await store.put_cells([cell("a", status="running"), cell("b"), cell("c", status="error")])
    await store.put_cells([cell("d", tenant="t2", user="v", status="running")])
    running = await store.running_cells()
    assert sorted((c.tenant, c.user, c.id) for c in running) == [("t", "u", "a"), ("t2", "v", "d")]
    await store.put_cells([cell("a", status="interrupted")])
    assert [c.id for c in await store.running_cells()] == ["d"]


async def test_late_outputs_are_appended_to_a_stored_cell(store: Store) -> None:
    await store.put_cells([cell("c1", outputs=[STREAM])])
    late = [{"output_type": "stream", "name": "stderr", "text": "late\n"}]
    await store.append_outputs("t", "u", "c1", late)
    await store.append_outputs("t", "u", "c1", late)
    [stored] = await store.list_cells("t", "u")
    assert stored.outputs == [STREAM, *late, *late]
    await store.append_outputs("t", "u", "missing", late)  # no such cell: nothing happens
    await store.append_outputs("t", "other", "c1", late)
    assert await store.list_cells("t", "other") == []
    assert [c.outputs for c in await store.list_cells("t", "u")] == [[STREAM, *late, *late]]


async def test_a_batch_writes_sessions_events_cells_and_outputs_after_their_cells(
    store: Store,
) -> None:
    late = [{"output_type": "stream", "name": "stderr", "text": "late\n"}]
    batch = Batch(
        sessions=[session("t", "u", execution_count=2, state="idle"), session("t", "v")],
        events={("t", "u"): [(1, '{"seq": 1}'), (2, '{"seq": 2}')], ("t", "v"): [(1, "{}")]},
        cells=[cell("c1", outputs=[STREAM]), cell("c2", user="v")],
        outputs=[("t", "u", "c1", late)],  # extends c1, written in the same batch
    )
    await store.write_batch(batch)
    await store.write_batch(Batch(outputs=[("t", "u", "c1", late)]))
    assert await store.get_session("t", "u") == batch.sessions[0]
    assert await store.get_session("t", "v") == batch.sessions[1]
    assert await store.events_between("t", "u", 0, 10) == [(1, '{"seq": 1}'), (2, '{"seq": 2}')]
    assert await store.last_seq("t", "v") == 1
    [c1] = await store.list_cells("t", "u")
    assert c1.outputs == [STREAM, *late, *late]
    assert [c.id for c in await store.list_cells("t", "v")] == ["c2"]
    await store.write_batch(Batch())  # nothing to write is fine


# -- transcript events ---------------------------------------------------------------------


async def test_events_between_are_seq_body_pairs_in_order(store: Store) -> None:
    assert await store.last_seq("t", "u") == 0
    await store.append_events("t", "u", [(1, '{"seq": 1}'), (2, '{"seq": 2, "é": "✓"}')])
    await store.append_events("t", "u", [(3, '{"seq": 3}'), (4, '{"seq": 4}')])
    await store.append_events("t", "other", [(9, '{"seq": 9}')])
    assert await store.events_between("t", "u", 1, 4) == [
        (2, '{"seq": 2, "é": "✓"}'),
        (3, '{"seq": 3}'),
    ]  # both bounds excluded
    everything = await store.events_between("t", "u", 0, 2**62)
    assert [seq for seq, _ in everything] == [1, 2, 3, 4]
    assert all(isinstance(seq, int) and isinstance(body, str) for seq, body in everything)
    assert await store.events_between("t", "u", 4, 10) == []
    assert await store.last_seq("t", "u") == 4
    assert await store.last_seq("t", "other") == 9
    assert await store.last_seq("other", "u") == 0


async def test_delete_transcript_forgets_cells_and_events_of_that_user_only(
    store: Store,
) -> None:
    for user in ("u", "keep"):
        await store.put_cells([cell("c1", user=user), cell("c2", user=user)])
        await store.append_events("t", user, [(1, "{}"), (2, "{}")])
    await store.put_session(session("t", "u"))
    await store.delete_transcript("t", "u")
    assert await store.list_cells("t", "u") == []
    assert await store.events_between("t", "u", 0, 100) == []
    assert await store.last_seq("t", "u") == 0
    assert await store.get_session("t", "u") is not None  # the record is the caller's to delete
    assert len(await store.list_cells("t", "keep")) == 2
    assert await store.last_seq("t", "keep") == 2


async def test_status_counts_the_tenants_own_sessions_and_cells(store: Store, backend: str) -> None:
    await store.put_session(session("t", "a"))
    await store.put_session(session("t", "b"))
    await store.put_session(session("other", "c"))
    await store.put_cells([cell("c1"), cell("c2"), cell("c1", user="v")])
    await store.put_cells([cell("x", tenant="other", user="c")])
    assert await store.status("t") == {"backend": backend, "sessions": 2, "cells": 3}
    assert await store.status("other") == {"backend": backend, "sessions": 1, "cells": 1}
    assert await store.status("nobody") == {"backend": backend, "sessions": 0, "cells": 0}


# -- file records --------------------------------------------------------------------------


def record(name: str, origin: str = "generated") -> FileRecord:
    return FileRecord(name, (1_000, len(name), 7), origin, "ab" * 32)  # type: ignore[arg-type]


async def test_records_per_user_in_batches_and_by_range(store: Store) -> None:
    names = [f"f{i:04d}" for i in range(1200)]  # more than one IN (...) batch
    await store.put_file_records("t", "u", [record(n) for n in names])
    await store.put_file_records("t", "other", [record("f0001", "upload")])
    got = await store.file_records("t", "u", [*names, "missing"])
    assert sorted(got) == names and got["f0001"] == record("f0001")
    assert (await store.file_records("t", "other", ["f0001"]))["f0001"].origin == "upload"
    assert sorted(await store.file_records_in("t", "u", "f0009", "f0012")) == [
        "f0010",
        "f0011",
        "f0012",
    ]
    await store.put_file_records("t", "u", [record("f0010", "upload")], drop=["f0011"])
    page = await store.file_records_in("t", "u", "f0009", "f0012")
    assert sorted(page) == ["f0010", "f0012"] and page["f0010"].origin == "upload"
    assert await store.drop_file_records("t", "u", ["f0000", "nope"]) == 1
    assert await store.drop_file_records("t", "u") == 1200 - 2
    assert await store.file_records("t", "u", names) == {}
    assert await store.file_records("t", "other", ["f0001"]) != {}


async def test_expiry_marks_replace_records_and_are_bounded(store: Store) -> None:
    await store.put_file_records("t", "u", [record("old.csv"), record("keep.csv")])
    await store.mark_files_expired("t", "u", ["old.csv"], when=100.0, forget_before=0.0)
    assert await store.file_records("t", "u", ["old.csv", "keep.csv"]) == {
        "keep.csv": record("keep.csv")
    }
    assert await store.file_expired_at("t", "u", "old.csv") == 100.0
    assert await store.file_expired_at("t", "u", "keep.csv") is None
    assert await store.file_records_in("t", "u", "", "zzz") == {"keep.csv": record("keep.csv")}
    await store.put_file_records("t", "u", [record("old.csv")])  # the name exists again
    assert await store.file_expired_at("t", "u", "old.csv") is None
    await store.mark_files_expired("t", "u", ["a"], when=200.0, forget_before=0.0)
    await store.mark_files_expired("t", "u", ["b"], when=300.0, forget_before=250.0)
    assert await store.file_expired_at("t", "u", "a") is None  # forgotten
    many = [f"x{i}" for i in range(MAX_EXPIRED + 5)]
    await store.mark_files_expired("t", "u", many, when=400.0, forget_before=0.0)
    kept = [n for n in ["b", *many] if await store.file_expired_at("t", "u", n) is not None]
    assert len(kept) == MAX_EXPIRED


# -- SQLite only -----------------------------------------------------------------------------


async def test_sqlite_keeps_everything_across_a_reopen(tmp_path: Path) -> None:
    first = open_sqlite(tmp_path)
    await first.open()
    await first.put_session(session("t", "u", kernel_id="k-1"))
    await first.put_cells([cell("c1", outputs=[STREAM])])
    await first.append_events("t", "u", [(1, "{}")])
    await first.close()
    again = open_sqlite(tmp_path)
    await again.open()
    try:
        assert (await again.get_session("t", "u")) == session("t", "u", kernel_id="k-1")
        assert [c.outputs for c in await again.list_cells("t", "u")] == [[STREAM]]
        assert await again.last_seq("t", "u") == 1
    finally:
        await again.close()


async def test_sqlite_adds_the_kernel_id_column_to_an_older_data_dir(tmp_path: Path) -> None:
    path = tmp_path / "kss.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE sessions (tenant TEXT NOT NULL, user TEXT NOT NULL, created REAL NOT NULL,"
        " last_activity REAL NOT NULL, execution_count INTEGER NOT NULL DEFAULT 0,"
        " state TEXT NOT NULL, PRIMARY KEY (tenant, user))"
    )
    old.execute("INSERT INTO sessions VALUES ('t', 'u', 10.0, 100.0, 2, 'closed')")
    old.commit()
    old.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.get_session("t", "u") == session("t", "u", execution_count=2)
        await store.put_session(session("t", "v", kernel_id="k-9"))
        assert (await store.get_session("t", "v")) == session("t", "v", kernel_id="k-9")
    finally:
        await store.close()


# -- MongoDB only ----------------------------------------------------------------------------


@pytest.fixture
async def mongo(mongo_uri: str) -> AsyncIterator[MongoStore]:
    s = open_mongodb(mongo_uri)
    await s.open()
    try:
        yield s
    finally:
        await s.db.client.drop_database(s.database)
        await s.close()


async def test_mongodb_creates_unique_keys_and_the_lease_ttl_at_open(mongo: MongoStore) -> None:
    for name, key in [
        ("sessions", ["tenant", "user"]),
        ("cells", ["tenant", "user", "id"]),
        ("events", ["tenant", "user", "seq"]),
        ("files", ["tenant", "user", "name"]),
        ("leases", ["tenant", "user"]),
    ]:
        indexes = await mongo.db[name].index_information()
        assert indexes["key"]["unique"] is True
        assert [k for k, _ in indexes["key"]["key"]] == key
    ttl = (await mongo.db.leases.index_information())["ttl"]
    assert ttl["expireAfterSeconds"] == 0 and ttl["key"] == [("expires", 1)]
    again = MongoStore(mongo.uri, mongo.database)
    await again.open()  # a second start (another replica) finds them as they are
    await again.close()


async def test_mongodb_writes_can_be_repeated_whole(mongo: MongoStore) -> None:
    """A batch half applied when MongoDB went away is written again whole."""
    batch = [(1, '{"seq": 1}'), (2, '{"seq": 2}'), (3, '{"seq": 3}')]
    await mongo.append_events("t", "u", batch[:2])
    await mongo.append_events("t", "u", batch)
    assert await mongo.events_between("t", "u", 0, 10) == batch
    await mongo.put_cells([cell("c1", status="running")])
    await mongo.put_cells([cell("c1", status="ok", outputs=[STREAM])] * 2)
    [stored] = await mongo.list_cells("t", "u")
    assert (stored.status, stored.outputs) == ("ok", [STREAM])
