"""SQLite store (stdlib): the embedded default, a file under the data dir.

All statements run on one worker thread that owns the connection, so the event loop never
waits on the disk and SQLite never sees two threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from files.listing import FileRecord

from .base import Batch, CellRecord, SessionRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    created REAL NOT NULL,
    last_activity REAL NOT NULL,
    execution_count INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    kernel_id TEXT NOT NULL DEFAULT '',
    packages TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant, user)
);
CREATE INDEX IF NOT EXISTS sessions_last_activity ON sessions (last_activity);
CREATE TABLE IF NOT EXISTS cells (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    execution_count INTEGER,
    outputs TEXT NOT NULL,
    metadata TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    UNIQUE (tenant, user, id)
);
CREATE INDEX IF NOT EXISTS cells_status ON cells (status);
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, user, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    mtime_ns INTEGER,
    size INTEGER,
    inode INTEGER,
    origin TEXT,
    sha256 TEXT,
    expired_at REAL,  -- set: expiry removed the file; the other columns are NULL
    PRIMARY KEY (tenant, user, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_expired ON files (tenant, user, expired_at)
    WHERE expired_at IS NOT NULL;
"""

SESSION_COLUMNS = (
    "tenant, user, created, last_activity, execution_count, state, kernel_id, packages"
)
FILE_COLUMNS = "name, mtime_ns, size, inode, origin, sha256"
MAX_EXPIRED = 10_000  # names remembered as expired per user, newest kept
IN_BATCH = 500  # names per `IN (...)`: well under SQLite's limit on parameters

CELL_COLUMNS = (
    "tenant, user, id, kind, source, created, status, execution_count, outputs, metadata, first_seq"
)


def _session(row: tuple[Any, ...]) -> SessionRecord:
    *fields, packages = row
    return SessionRecord(*fields, packages=json.loads(packages))


PUT_SESSION = f"INSERT OR REPLACE INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
PUT_EVENT = "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)"
PUT_CELL = (
    f"INSERT INTO cells ({CELL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant, user, id) DO UPDATE SET status = excluded.status, "
    "execution_count = excluded.execution_count, outputs = excluded.outputs, "
    "metadata = excluded.metadata"
)


def _session_row(r: SessionRecord) -> tuple[Any, ...]:
    return (
        r.tenant,
        r.user,
        r.created,
        r.last_activity,
        r.execution_count,
        r.state,
        r.kernel_id,
        json.dumps(r.packages),
    )


def _append_outputs(
    db: sqlite3.Connection, tenant: str, user: str, cell_id: str, outputs: list[dict[str, Any]]
) -> None:
    """Add `outputs` at the end of a stored cell's (inside the caller's transaction)."""
    rows = db.execute(
        "SELECT outputs FROM cells WHERE tenant = ? AND user = ? AND id = ?",
        (tenant, user, cell_id),
    ).fetchall()
    if rows:
        merged = json.loads(rows[0][0]) + outputs
        db.execute(
            "UPDATE cells SET outputs = ? WHERE tenant = ? AND user = ? AND id = ?",
            (json.dumps(merged, ensure_ascii=False), tenant, user, cell_id),
        )


def _cell_row(c: CellRecord) -> tuple[Any, ...]:
    return (
        c.tenant,
        c.user,
        c.id,
        c.kind,
        c.source,
        c.created,
        c.status,
        c.execution_count,
        json.dumps(c.outputs, ensure_ascii=False),
        json.dumps(c.metadata),
        c.first_seq,
    )


def _file_record(row: tuple[Any, ...]) -> FileRecord:
    name, mtime_ns, size, inode, origin, sha256 = row
    return FileRecord(name, (mtime_ns, size, inode), origin, sha256)


def _batches(names: Sequence[str]) -> list[Sequence[str]]:
    return [names[i : i + IN_BATCH] for i in range(0, len(names), IN_BATCH)]


def _cell(row: tuple[Any, ...]) -> CellRecord:
    position, tenant, user, id_, kind, source, created, status, count, outputs, meta, seq = row
    return CellRecord(
        tenant,
        user,
        id_,
        kind,
        source,
        created,
        status,
        count,
        json.loads(outputs),
        json.loads(meta),
        seq,
        position,
    )


class SqliteStore:
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            for column, default in (("kernel_id", "''"), ("packages", "'[]'")):
                if column not in columns:  # a data dir from before the column existed
                    db.execute(
                        f"ALTER TABLE sessions ADD COLUMN {column} TEXT NOT NULL DEFAULT {default}"
                    )
            self._db = db

        await self._run(connect)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self._db is not None, "store is not open"
        return self._db.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction around the block. The connection is in autocommit mode
        (`isolation_level=None`), where `with db:` alone would commit every statement by
        itself: a batch of 5 events took 114 us that way, 37 us in one transaction, and a
        multi-statement change was not atomic."""
        assert self._db is not None, "store is not open"
        self._db.execute("BEGIN")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._transaction() as db:  # one transaction per batch
            db.executemany(sql, rows)

    # -- sessions --------------------------------------------------------------------------

    async def put_session(self, record: SessionRecord) -> None:
        await self._run(self._exec, PUT_SESSION, _session_row(record))

    async def get_session(self, tenant: str, user: str) -> SessionRecord | None:
        rows = await self._run(
            self._exec,
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ? AND user = ?",
            (tenant, user),
        )
        return _session(rows[0]) if rows else None

    async def list_sessions(self, tenant: str) -> list[SessionRecord]:
        rows = await self._run(
            self._exec,
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant = ? ORDER BY user",
            (tenant,),
        )
        return [_session(row) for row in rows]

    async def delete_session(self, tenant: str, user: str) -> bool:
        def delete() -> bool:
            assert self._db is not None
            cur = self._db.execute(
                "DELETE FROM sessions WHERE tenant = ? AND user = ?", (tenant, user)
            )
            return cur.rowcount > 0

        return await self._run(delete)

    async def expired_sessions(self, before: float) -> list[SessionRecord]:
        rows = await self._run(
            self._exec,
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE last_activity < ?",
            (before,),
        )
        return [_session(row) for row in rows]

    async def status(self, tenant: str) -> dict[str, Any]:
        rows = await self._run(
            self._exec,
            "SELECT (SELECT count(*) FROM sessions WHERE tenant = ?), "
            "(SELECT count(*) FROM cells WHERE tenant = ?)",
            (tenant, tenant),
        )
        return {"backend": self.backend, "sessions": rows[0][0], "cells": rows[0][1]}

    # -- transcript ------------------------------------------------------------------------

    async def write_batch(self, batch: Batch) -> None:
        """One hop to the store's thread and one transaction for the whole batch (one per
        kind and key before: an `x + 1` paid for four)."""

        def write() -> None:
            with self._transaction() as db:
                if batch.sessions:
                    db.executemany(PUT_SESSION, [_session_row(r) for r in batch.sessions])
                for (tenant, user), rows in batch.events.items():
                    db.executemany(PUT_EVENT, [(tenant, user, seq, body) for seq, body in rows])
                if batch.cells:
                    db.executemany(PUT_CELL, [_cell_row(c) for c in batch.cells])
                for tenant, user, cell_id, added in batch.outputs:
                    _append_outputs(db, tenant, user, cell_id, added)

        await self._run(write)

    async def put_cells(self, cells: list[CellRecord]) -> None:
        def put() -> None:  # encoding the outputs is work too: done on the store's thread
            self._many(PUT_CELL, [_cell_row(c) for c in cells])

        await self._run(put)

    async def append_outputs(
        self, tenant: str, user: str, cell_id: str, outputs: list[dict[str, Any]]
    ) -> None:
        def append() -> None:
            with self._transaction() as db:
                _append_outputs(db, tenant, user, cell_id, outputs)

        await self._run(append)

    async def list_cells(self, tenant: str, user: str) -> list[CellRecord]:
        rows = await self._run(
            self._exec,
            f"SELECT position, {CELL_COLUMNS} FROM cells WHERE tenant = ? AND user = ? "
            "ORDER BY position",
            (tenant, user),
        )
        return [_cell(row) for row in rows]

    async def running_cells(self) -> list[CellRecord]:
        rows = await self._run(
            self._exec,
            f"SELECT position, {CELL_COLUMNS} FROM cells WHERE status = 'running' "
            "ORDER BY position",
        )
        return [_cell(row) for row in rows]

    async def append_events(self, tenant: str, user: str, events: list[tuple[int, str]]) -> None:
        await self._run(self._many, PUT_EVENT, [(tenant, user, seq, body) for seq, body in events])

    async def events_between(
        self, tenant: str, user: str, after: int, before: int
    ) -> list[tuple[int, str]]:
        rows = await self._run(
            self._exec,
            "SELECT seq, body FROM events WHERE tenant = ? AND user = ? AND seq > ? AND seq < ? "
            "ORDER BY seq",
            (tenant, user, after, before),
        )
        return [(int(seq), body) for seq, body in rows]

    async def last_seq(self, tenant: str, user: str) -> int:
        rows = await self._run(
            self._exec,
            "SELECT coalesce(max(seq), 0) FROM events WHERE tenant = ? AND user = ?",
            (tenant, user),
        )
        return int(rows[0][0])

    async def delete_transcript(self, tenant: str, user: str) -> None:
        def delete() -> None:
            assert self._db is not None
            with self._transaction():
                for table in ("cells", "events"):
                    self._db.execute(
                        f"DELETE FROM {table} WHERE tenant = ? AND user = ?", (tenant, user)
                    )

        await self._run(delete)

    # -- file records ----------------------------------------------------------------------

    async def file_records(
        self, tenant: str, user: str, names: Sequence[str]
    ) -> dict[str, FileRecord]:
        def read() -> dict[str, FileRecord]:
            found = {}
            for batch in _batches(list(names)):
                marks = ", ".join("?" * len(batch))
                rows = self._exec(
                    f"SELECT {FILE_COLUMNS} FROM files WHERE tenant = ? AND user = ? "
                    f"AND name IN ({marks}) AND expired_at IS NULL",
                    (tenant, user, *batch),
                )
                found.update((row[0], _file_record(row)) for row in rows)
            return found

        return await self._run(read)

    async def file_records_in(
        self, tenant: str, user: str, after: str, upto: str
    ) -> dict[str, FileRecord]:
        rows = await self._run(
            self._exec,
            f"SELECT {FILE_COLUMNS} FROM files WHERE tenant = ? AND user = ? "
            "AND name > ? AND name <= ? AND expired_at IS NULL",
            (tenant, user, after, upto),
        )
        return {row[0]: _file_record(row) for row in rows}

    async def put_file_records(
        self, tenant: str, user: str, records: Sequence[FileRecord], drop: Sequence[str] = ()
    ) -> None:
        def put() -> None:
            assert self._db is not None, "store is not open"
            with self._transaction():
                self._db.executemany(
                    "DELETE FROM files WHERE tenant = ? AND user = ? AND name = ?",
                    [(tenant, user, name) for name in drop],
                )
                self._db.executemany(
                    f"INSERT OR REPLACE INTO files (tenant, user, {FILE_COLUMNS}, expired_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    [(tenant, user, r.name, *r.stamp, r.origin, r.sha256) for r in records],
                )

        await self._run(put)

    async def drop_file_records(
        self, tenant: str, user: str, names: Sequence[str] | None = None
    ) -> int:
        def drop() -> int:
            assert self._db is not None, "store is not open"
            with self._transaction():
                if names is None:
                    cur = self._db.execute(
                        "DELETE FROM files WHERE tenant = ? AND user = ?", (tenant, user)
                    )
                    return cur.rowcount
                cur = self._db.executemany(
                    "DELETE FROM files WHERE tenant = ? AND user = ? AND name = ?",
                    [(tenant, user, name) for name in names],
                )
                return cur.rowcount

        return await self._run(drop)

    async def mark_files_expired(
        self, tenant: str, user: str, names: Sequence[str], when: float, forget_before: float
    ) -> None:
        def mark() -> None:
            assert self._db is not None, "store is not open"
            with self._transaction():
                self._db.execute(
                    "DELETE FROM files WHERE tenant = ? AND user = ? AND expired_at < ?",
                    (tenant, user, forget_before),
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO files (tenant, user, name, expired_at) "
                    "VALUES (?, ?, ?, ?)",
                    [(tenant, user, name, when) for name in names],
                )
                self._db.execute(
                    "DELETE FROM files WHERE tenant = ? AND user = ? AND name IN ("
                    "SELECT name FROM files WHERE tenant = ? AND user = ? "
                    "AND expired_at IS NOT NULL ORDER BY expired_at DESC LIMIT -1 OFFSET ?)",
                    (tenant, user, tenant, user, MAX_EXPIRED),
                )

        await self._run(mark)

    async def file_expired_at(self, tenant: str, user: str, name: str) -> float | None:
        rows = await self._run(
            self._exec,
            "SELECT expired_at FROM files WHERE tenant = ? AND user = ? AND name = ?",
            (tenant, user, name),
        )
        return rows[0][0] if rows else None
