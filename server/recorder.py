"""`SessionRecorder`: the server's `SessionObserver`, where sessions' work goes.

Given once to the registry, it is the whole data path out of a session: events and cells to
the transcript (written behind, in order), the session's record to the store, and the view
of the user's work dir the session watches (files it announces with their download URLs,
and the disk use it guards).
"""

from __future__ import annotations

from typing import Any

from files.area import HIBERNATION_DIR, FileArea, Snapshot
from files.areas import FileAreas
from kernels.execution import Cell, FileWatch, Started
from kernels.observer import Resume, SessionView
from transcript.store.base import SessionRecord
from transcript.transcript import Transcript

from .files_http import file_url


class SessionRecorder:
    def __init__(self, transcript: Transcript, files: FileAreas) -> None:
        self.transcript = transcript
        self.files = files

    async def resume(self, tenant: str, user: str) -> Resume:
        return await self.transcript.resume_for(tenant, user)

    def file_watch(self, tenant: str, user: str) -> FileWatch | None:
        return AreaWatch(self.files.area(tenant, user), user)

    def execution_started(self, session: SessionView, started: Started) -> None:
        self.transcript.cell_started(session, started)

    async def execution_finished(self, session: SessionView, cell: Cell) -> None:
        self.transcript.cell_finished(session, cell)
        self.transcript.save_session(record_of(session))  # in order with the cells

    def outputs_added(
        self, session: SessionView, cell_id: str, outputs: list[dict[str, Any]]
    ) -> None:
        self.transcript.outputs_added(session, cell_id, outputs)

    async def session_changed(self, session: SessionView) -> None:
        self.transcript.save_session(record_of(session))


def record_of(session: SessionView) -> SessionRecord:
    return SessionRecord(
        tenant=session.tenant,
        user=session.user,
        created=session.created,
        last_activity=session.last_activity,
        execution_count=session.execution_count,
        state=str(session.state),
        kernel_id=session.last_kernel_id,
        packages=list(session.packages.requirements),
    )


class AreaWatch:
    """`FileWatch` of one user's file area: changed files with their download URLs. Every
    call runs in the user's lane of the fair file pool."""

    def __init__(self, area: FileArea, user: str) -> None:
        self.area = area
        self.user = user
        self.quota = area.quota
        self.hibernation_dir = HIBERNATION_DIR

    async def usage(self) -> int:
        return await self.area.ausage()

    async def snapshot(self) -> Snapshot:
        return await self.area.asnapshot()

    async def has_hibernation(self) -> bool:
        return await self.area.ahas_hibernation()

    async def drop_hibernation(self) -> None:
        await self.area.adrop_hibernation()

    async def changes(self, before: Snapshot) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "size": c.size, "event": c.event, "url": file_url(self.user, c.name)}
            for c in await self.area.achanges_since(before)
        ]
