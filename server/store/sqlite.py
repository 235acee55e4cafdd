"""SQLite store (stdlib): the embedded default, a file under the data dir.

All statements run on one worker thread that owns the connection, so the event loop never
waits on the disk and SQLite never sees two threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .base import SessionRecord

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    created REAL NOT NULL,
    last_activity REAL NOT NULL,
    execution_count INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    PRIMARY KEY (tenant, user)
);
CREATE INDEX IF NOT EXISTS sessions_last_activity ON sessions (last_activity);
"""


class SqliteStore:
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

    async def put_session(self, record: SessionRecord) -> None:
        await self._run(
            self._exec,
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.tenant,
                record.user,
                record.created,
                record.last_activity,
                record.execution_count,
                record.state,
            ),
        )

    async def get_session(self, tenant: str, user: str) -> SessionRecord | None:
        rows = await self._run(
            self._exec, "SELECT * FROM sessions WHERE tenant = ? AND user = ?", (tenant, user)
        )
        return SessionRecord(*rows[0]) if rows else None

    async def list_sessions(self, tenant: str) -> list[SessionRecord]:
        rows = await self._run(
            self._exec, "SELECT * FROM sessions WHERE tenant = ? ORDER BY user", (tenant,)
        )
        return [SessionRecord(*row) for row in rows]

    async def delete_session(self, tenant: str, user: str) -> bool:
        def delete() -> bool:
            assert self._db is not None
            cur = self._db.execute(
                "DELETE FROM sessions WHERE tenant = ? AND user = ?", (tenant, user)
            )
            return cur.rowcount > 0

        return await self._run(delete)

    async def status(self) -> dict[str, Any]:
        rows = await self._run(self._exec, "SELECT count(*) FROM sessions")
        return {"backend": "sqlite", "path": str(self.path), "sessions": rows[0][0]}
