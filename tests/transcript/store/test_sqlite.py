"""What the SQLite store promises beyond the contract every store keeps: a batch is one
transaction (the connection runs in autocommit mode, where each statement would otherwise
commit by itself)."""

from __future__ import annotations

import sqlite3

import pytest

from files.listing import FileRecord
from transcript.store.base import Batch, CellRecord, SessionRecord
from transcript.store.sqlite import SqliteStore


async def test_a_refused_batch_of_events_leaves_none_of_them(store: SqliteStore) -> None:
    await store.append_events("t", "u", [(1, "kept")])
    with pytest.raises(sqlite3.IntegrityError):  # body is NOT NULL: the last row is refused
        await store.append_events("t", "u", [(2, "a"), (3, "b"), (4, None)])  # type: ignore[list-item]
    assert await store.events_between("t", "u", 0, 10) == [(1, "kept")]
    await store.append_events("t", "u", [(2, "a"), (3, "b")])  # the store still takes writes
    assert [seq for seq, _ in await store.events_between("t", "u", 0, 10)] == [1, 2, 3]


async def test_replacing_file_records_is_atomic(store: SqliteStore) -> None:
    old = FileRecord("a.csv", (1, 1.0, 1), "upload", "0" * 64)
    await store.put_file_records("t", "u", [old])
    bad = FileRecord("b.csv", None, "upload", "0" * 64)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # after the drop ran, in the same transaction
        await store.put_file_records("t", "u", [bad], drop=["a.csv"])
    assert list(await store.file_records("t", "u", ["a.csv"])) == ["a.csv"]  # not dropped


async def test_a_batch_is_one_transaction(store: SqliteStore) -> None:
    """The transcript writes a refused batch again item by item: a half-written batch would
    have its outputs appended twice."""
    cell = CellRecord("t", "u", "c1", "code", "1", 1.0, outputs=[{"output_type": "stream"}])
    await store.put_cells([cell])
    late = [{"output_type": "stream", "name": "stderr", "text": "late\n"}]
    refused = Batch(
        sessions=[SessionRecord("t", "u", 1.0, 2.0)],
        events={("t", "u"): [(1, "a"), (2, None)]},  # type: ignore[list-item]  # NOT NULL
        outputs=[("t", "u", "c1", late)],
    )
    with pytest.raises(sqlite3.IntegrityError):
        await store.write_batch(refused)
    assert await store.get_session("t", "u") is None
    assert await store.events_between("t", "u", 0, 10) == []
    assert [c.outputs for c in await store.list_cells("t", "u")] == [cell.outputs]
