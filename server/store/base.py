"""The `Store` protocol every storage backend implements (one shared contract test suite)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass
class SessionRecord:
    tenant: str
    user: str
    created: float
    last_activity: float
    execution_count: int = 0
    state: str = "closed"

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        del data["tenant"]
        return data


class Store(Protocol):
    """Durable session metadata."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put_session(self, record: SessionRecord) -> None:
        """Insert or replace the record of (record.tenant, record.user)."""
        ...

    async def get_session(self, tenant: str, user: str) -> SessionRecord | None: ...

    async def list_sessions(self, tenant: str) -> list[SessionRecord]: ...

    async def delete_session(self, tenant: str, user: str) -> bool: ...

    async def status(self) -> dict[str, Any]: ...
