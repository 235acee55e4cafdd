"""A real SQLite store in the test's tmp dir (`store`); the contract suite
(store/test_contract.py) has its own `store`, parametrised by backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from transcript.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "kss.sqlite3")
    await s.open()
    yield s
    await s.close()
