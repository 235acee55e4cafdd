"""Route table and lifespan: start the store, sandbox, pool, sessions and janitor; stop them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import tornado.web

from files.area import FileArea, FileLimits, Snapshot
from files.areas import FileAreas
from files.pool import FairPool
from files.work_dirs import WorkDirs
from kernels.launcher import KernelCommand, Launcher, default_kernel_python
from kernels.pool import KernelPool
from kernels.registry import SessionRegistry
from kernels.sandbox import SandboxPolicy, cleanup_leftovers, make_launcher
from kernels.session import Cell, KernelSession, Limits
from transcript.store.base import SessionRecord, Store
from transcript.store.sqlite import SqliteStore
from transcript.transcript import Transcript

from . import sessions_http as h
from .api import NotFoundHandler
from .auth import Authenticator
from .config import Settings
from .files_http import file_routes, file_url
from .janitor import Janitor
from .keys import server_secret
from .logs import log_request
from .notebook_http import NotebookHandler, NotesHandler
from .state import AppState
from .websocket import SessionSocket

log = logging.getLogger(__name__)

USER = r"([^/]+)"


def make_routes(state: AppState) -> list[tuple[str, type, dict[str, Any]]]:
    kw = {"state": state}
    return [
        (r"/api/health", h.HealthHandler, kw),
        (r"/api/status", h.StatusHandler, kw),
        (r"/api/sessions", h.SessionsHandler, kw),
        (rf"/api/sessions/{USER}", h.SessionHandler, kw),
        (rf"/api/sessions/{USER}/execute", h.ExecuteHandler, kw),
        (rf"/api/sessions/{USER}/interrupt", h.InterruptHandler, kw),
        (rf"/api/sessions/{USER}/restart", h.RestartHandler, kw),
        (rf"/api/sessions/{USER}/notebook", NotebookHandler, kw),
        (rf"/api/sessions/{USER}/notes", NotesHandler, kw),
        (rf"/api/sessions/{USER}/ws", SessionSocket, kw),
        *file_routes(USER, kw),
    ]


def make_app(state: AppState) -> tornado.web.Application:
    return tornado.web.Application(
        make_routes(state),  # type: ignore[arg-type]
        default_handler_class=NotFoundHandler,
        default_handler_args={"state": state},
        websocket_ping_interval=30,
        websocket_ping_timeout=30,
        log_function=log_request,
    )


def sandbox_policy(settings: Settings) -> SandboxPolicy:
    return SandboxPolicy(
        uid_first=settings.kernel_uid_first,
        uid_last=settings.kernel_uid_last,
        memory_bytes=settings.kernel_memory_bytes,
        pids_max=settings.kernel_pids,
        cpus=settings.kernel_cpus,
        file_size_bytes=settings.kernel_file_bytes,
        tmp_bytes=settings.kernel_tmp_bytes,
    )


def launcher_for(settings: Settings) -> Launcher:
    """The kernel launcher; raises `SandboxUnavailable` rather than run unsandboxed."""
    return make_launcher(
        sandbox=settings.sandbox == "on",
        runtime_root=settings.runtime_dir,
        policy=sandbox_policy(settings),
        command=KernelCommand(
            settings.kernel_python or default_kernel_python(),
            # the kernel drops stream text past this before buffering it (startup code)
            extra_env={"KSS_OUTPUT_CAP_BYTES": str(settings.output_cap_bytes)},
        ),
    )


def _record(session: KernelSession) -> SessionRecord:
    return SessionRecord(
        tenant=session.tenant,
        user=session.user,
        created=session.created,
        last_activity=session.last_activity,
        execution_count=session.execution_count,
        state=str(session.state),
        kernel_id=session.last_kernel_id,
    )


class AreaWatch:
    """`FileWatch` of one user's file area: changed files with their download URLs. Every
    call runs in the user's lane of the fair file pool."""

    def __init__(self, area: FileArea, user: str) -> None:
        self.area = area
        self.user = user
        self.quota = area.quota

    async def usage(self) -> int:
        return await self.area.ausage()

    async def snapshot(self) -> Snapshot:
        return await self.area.asnapshot()

    async def changes(self, before: Snapshot) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "size": c.size, "event": c.event, "url": file_url(self.user, c.name)}
            for c in await self.area.achanges_since(before)
        ]


def file_limits(settings: Settings) -> FileLimits:
    return FileLimits(
        max_file_bytes=settings.file_max_bytes,
        quota=settings.user_quota_bytes,
        ttl_seconds=settings.file_ttl_seconds,
    )


@contextlib.asynccontextmanager
async def lifespan(settings: Settings) -> AsyncIterator[AppState]:
    """Everything the app needs, started in order and stopped in reverse."""
    policy = sandbox_policy(settings)
    await cleanup_leftovers(settings.runtime_dir, policy)  # a crashed run's kernels, mounts
    launcher = launcher_for(settings)
    store: Store = SqliteStore(settings.data_dir / "kss.sqlite3")
    await store.open()
    file_pool = FairPool(settings.file_workers)
    work_dirs = WorkDirs(settings.data_dir / "work", server_secret(settings.data_dir))
    await asyncio.to_thread(work_dirs.adopt_legacy, settings.data_dir / "files")
    files = FileAreas(
        work_dirs,
        settings.data_dir / "staging",
        store,
        file_pool,
        file_limits(settings),
    )
    files.reset_staging()  # uploads a crash cut short: never visible to a kernel, gone now
    transcript = Transcript(store)
    await transcript.recover()
    transcript.start()
    pool = KernelPool(
        launcher,
        settings.runtime_dir,
        warm_size=settings.pool_size,
        max_starting=settings.max_starting_kernels,
        start_timeout=settings.kernel_start_timeout,
        max_message_bytes=settings.kernel_message_max_bytes,
    )
    limits = Limits(
        default_timeout=settings.exec_timeout,
        max_timeout=settings.max_exec_timeout,
        interrupt_grace=settings.interrupt_grace,
        client_cap=settings.output_cap_bytes,
        max_events=settings.output_cap_events,
        text_cap=settings.text_cap_bytes,
        max_message_bytes=settings.kernel_message_max_bytes,
        stop_strays=settings.stop_strays == "on",
        max_queue=settings.max_queue,
        replay_events=settings.replay_events,
        replay_bytes=settings.replay_bytes,
    )
    registry = SessionRegistry(
        pool,
        limits,
        files.work_dir,
        max_sessions=settings.max_sessions,
        max_sessions_per_tenant=settings.max_sessions_per_tenant,
    )
    state = AppState(
        settings, Authenticator(settings.api_keys), store, pool, registry, transcript, files
    )

    async def save_session(session: KernelSession, cell: Cell | None = None) -> None:
        transcript.save_session(_record(session))  # written behind, in order with the cells

    registry.resume_for = transcript.resume_for
    registry.start_hooks.append(transcript.cell_started)
    registry.outputs_hooks.append(transcript.outputs_added)
    registry.cell_hooks.extend([transcript.cell_finished, save_session])
    registry.session_hooks.append(save_session)
    registry.file_watch_for = lambda t, u: AreaWatch(files.area(t, u), u)
    janitor = Janitor(state)
    try:
        await pool.start()
        janitor.start()
        log.info("kernels run with sandbox mode %r", launcher.mode)
        yield state
    finally:
        await janitor.stop()
        await registry.close_all()
        await pool.close()
        await file_pool.close()  # queued file work is cancelled, running work not awaited
        await transcript.stop()
        await store.close()
        await cleanup_leftovers(settings.runtime_dir, policy)
