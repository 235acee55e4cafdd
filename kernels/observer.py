"""What the rest of the server learns from sessions: the `SessionObserver` the registry is
given once, and `Resume`, where a user's new session continues the earlier ones.

An observer sees a session through `SessionView`, the few facts it records; it never calls
back into the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .execution import Cell, EventSink, FileWatch, Started
from .installs import SessionPackages
from .outputs import Output
from .states import SessionState


class SessionView(Protocol):
    """What an observer may read of a session."""

    tenant: str
    user: str
    state: SessionState
    created: float
    last_activity: float
    execution_count: int
    last_kernel_id: str
    packages: SessionPackages


@dataclass(frozen=True)
class Resume:
    """Where a new session continues an earlier one of the same user (from the store)."""

    last_seq: int = 0
    sink: EventSink | None = None
    last_kernel_id: str = ""
    packages: list[str] = field(default_factory=list)  # what the user's session installed


class SessionObserver(Protocol):
    """What the rest of the server learns from sessions, given to the registry once: where a
    user's session resumes, how its work dir is watched, and what it runs and produces."""

    async def resume(self, tenant: str, user: str) -> Resume:
        """Where a new session of (tenant, user) continues the user's earlier ones."""
        ...

    def file_watch(self, tenant: str, user: str) -> FileWatch | None:
        """The view of the user's work dir the session announces files and guards disk by."""
        ...

    def execution_started(self, session: SessionView, started: Started) -> None: ...

    async def execution_finished(self, session: SessionView, cell: Cell) -> None: ...

    def outputs_added(self, session: SessionView, cell_id: str, outputs: list[Output]) -> None:
        """Late output of a finished cell (a thread it started printed on)."""
        ...

    async def session_changed(self, session: SessionView) -> None:
        """The session was created or closed."""
        ...


class NoObserver:
    """A `SessionObserver` that keeps nothing (sessions without a transcript or files)."""

    async def resume(self, tenant: str, user: str) -> Resume:
        return Resume()

    def file_watch(self, tenant: str, user: str) -> FileWatch | None:
        return None

    def execution_started(self, session: SessionView, started: Started) -> None:
        return None

    async def execution_finished(self, session: SessionView, cell: Cell) -> None:
        return None

    def outputs_added(self, session: SessionView, cell_id: str, outputs: list[Output]) -> None:
        return None

    async def session_changed(self, session: SessionView) -> None:
        return None
