"""The `Store` protocol every storage backend implements, and the records it keeps.

`tests/transcript/store/` holds the contract suite every backend passes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from files.listing import FileRecordStore


class StoreUnavailable(Exception):
    """The store cannot be reached now (a network store that is down): the same call may
    succeed later, unlike an item the store refuses."""

    code = "store_unavailable"


@dataclass
class CellRecord:
    """One transcript entry: a code cell (an execution) or a markdown note."""

    tenant: str
    user: str
    id: str
    kind: str  # "code" or "markdown"
    source: str
    created: float
    status: str = "ok"  # a code cell's `kernels.states.CellStatus`
    execution_count: int | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # started, duration_ms, kernel_id...
    first_seq: int = 0
    position: int = 0  # set by the store: order of first insertion


@dataclass
class SessionRecord:
    tenant: str
    user: str
    created: float
    last_activity: float
    execution_count: int = 0
    state: str = "closed"
    kernel_id: str = ""  # the kernel of the session's last execution
    packages: list[str] = field(default_factory=list)  # what the session installed

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        del data["tenant"], data["kernel_id"], data["packages"]
        return data


@dataclass
class Batch:
    """What the transcript's write-behind writes at once: the latest record of each
    session, events by (tenant, user), cells, and outputs added to finished cells
    (tenant, user, cell id, outputs)."""

    sessions: list[SessionRecord] = field(default_factory=list)
    events: dict[tuple[str, str], list[tuple[int, str]]] = field(default_factory=dict)
    cells: list[CellRecord] = field(default_factory=list)
    outputs: list[tuple[str, str, str, list[dict[str, Any]]]] = field(default_factory=list)


async def write_each(store: Store, batch: Batch) -> None:
    """`store.write_batch` for a store without transactions: one call per kind and key."""
    for record in batch.sessions:
        await store.put_session(record)
    for (tenant, user), rows in batch.events.items():
        await store.append_events(tenant, user, rows)
    if batch.cells:
        await store.put_cells(batch.cells)
    for tenant, user, cell_id, added in batch.outputs:  # after their cells, which they extend
        await store.append_outputs(tenant, user, cell_id, added)


class Store(FileRecordStore, Protocol):
    """Durable session metadata, and the file areas' records (`FileRecordStore`: origin
    and cached hash per (tenant, user, name), and which names expiry removed)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put_session(self, record: SessionRecord) -> None:
        """Insert or replace the record of (record.tenant, record.user)."""
        ...

    async def get_session(self, tenant: str, user: str) -> SessionRecord | None: ...

    async def list_sessions(self, tenant: str) -> list[SessionRecord]: ...

    async def delete_session(self, tenant: str, user: str) -> bool: ...

    async def status(self, tenant: str) -> dict[str, Any]:
        """{"backend", "sessions", "cells"}: the store's name and the tenant's own counts."""
        ...

    # -- transcript ------------------------------------------------------------------------

    async def write_batch(self, batch: Batch) -> None:
        """All of `batch`, as `write_each` writes it; in one transaction where the store
        has them (all or nothing: the transcript writes a refused batch again item by
        item)."""
        ...

    async def put_cells(self, cells: list[CellRecord]) -> None:
        """Insert or update cells by (tenant, user, id); a new cell goes last."""
        ...

    async def append_outputs(
        self, tenant: str, user: str, cell_id: str, outputs: list[dict[str, Any]]
    ) -> None:
        """Add outputs at the end of a stored cell's (late output of a finished cell)."""
        ...

    async def list_cells(self, tenant: str, user: str) -> list[CellRecord]: ...

    async def running_cells(self) -> list[CellRecord]:
        """Cells a crashed server left in status `running`."""
        ...

    async def append_events(self, tenant: str, user: str, events: list[tuple[int, str]]) -> None:
        """Store encoded events by seq (already JSON)."""
        ...

    async def events_between(
        self, tenant: str, user: str, after: int, before: int
    ) -> list[tuple[int, str]]:
        """(seq, encoded event) with after < seq < before, in order."""
        ...

    async def last_seq(self, tenant: str, user: str) -> int: ...

    async def delete_transcript(self, tenant: str, user: str) -> None: ...

    async def expired_sessions(self, before: float) -> list[SessionRecord]:
        """Sessions whose last activity is older than `before`."""
        ...
