"""The store's file records (SQLite): batched reads and writes per (tenant, user), expiry
marks, purge of a user's records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from files.listing import FileRecord
from transcript.store.sqlite import MAX_EXPIRED, SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "kss.sqlite3")
    await s.open()
    yield s
    await s.close()


def record(name: str, origin: str = "generated") -> FileRecord:
    return FileRecord(name, (1_000, len(name), 7), origin, "ab" * 32)  # type: ignore[arg-type]


async def test_records_per_user_in_batches_and_by_range(store: SqliteStore) -> None:
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


async def test_expiry_marks_replace_records_and_are_bounded(store: SqliteStore) -> None:
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
