"""Route table and lifespan: start the store, sandbox, pool, sessions and janitor; stop them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import tornado.web

from files.areas import FileAreas
from files.pool import FairPool
from files.work_dirs import WorkDirs
from kernels.events import ReplayBudget
from kernels.launcher import KernelCommand, Launcher, default_kernel_python
from kernels.pool import KernelPool
from kernels.registry import SessionRegistry
from kernels.sandbox import cleanup_leftovers, make_launcher
from transcript.store.base import Store
from transcript.store.sqlite import SqliteStore
from transcript.transcript import Transcript

from . import sessions_http as h
from .api import NotFoundHandler
from .auth import Authenticator
from .config import Settings
from .files_http import file_routes
from .janitor import Janitor
from .keys import server_secret
from .logs import log_request
from .notebook_http import NotebookHandler, NotesHandler
from .recorder import SessionRecorder
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


def launcher_for(settings: Settings) -> Launcher:
    """The kernel launcher; raises `SandboxUnavailable` rather than run unsandboxed."""
    return make_launcher(
        sandbox=settings.sandbox == "on",
        runtime_root=settings.runtime_dir,
        policy=settings.sandbox_policy,
        command=KernelCommand(
            settings.kernel_python or default_kernel_python(),
            # the kernel drops stream text past this before buffering it (startup code)
            extra_env={"KSS_OUTPUT_CAP_BYTES": str(settings.limits.client_cap)},
        ),
    )


@contextlib.asynccontextmanager
async def lifespan(settings: Settings) -> AsyncIterator[AppState]:
    """Everything the app needs, started in order; whatever started is stopped in reverse,
    also when a later step fails half-way through start-up."""
    async with contextlib.AsyncExitStack() as stack:
        runtime, policy = settings.runtime_dir, settings.sandbox_policy
        await cleanup_leftovers(runtime, policy)  # a crashed run's kernels, mounts
        stack.push_async_callback(cleanup_leftovers, runtime, policy)
        launcher = launcher_for(settings)

        store: Store = SqliteStore(settings.data_dir / "kss.sqlite3")
        await store.open()
        stack.push_async_callback(store.close)

        file_pool = FairPool(settings.file_workers)
        stack.push_async_callback(file_pool.close)  # queued work cancelled, running not awaited
        work_dirs = WorkDirs(settings.data_dir / "work", server_secret(settings.data_dir))
        await asyncio.to_thread(work_dirs.adopt_legacy, settings.data_dir / "files")
        files = FileAreas(
            work_dirs, settings.data_dir / "staging", store, file_pool, settings.files
        )
        files.reset_staging()  # uploads a crash cut short: never visible to a kernel, gone now

        transcript = Transcript(store)
        await transcript.recover()
        transcript.start()
        stack.push_async_callback(transcript.stop)

        pool = KernelPool(
            launcher,
            runtime,
            warm_size=settings.pool_size,
            max_starting=settings.max_starting_kernels,
            start_timeout=settings.kernel_start_timeout,
            max_message_bytes=settings.limits.max_message_bytes,
            preload=settings.preload,
        )
        await pool.start()
        stack.push_async_callback(pool.close)

        registry = SessionRegistry(
            pool,
            settings.limits,
            files.work_dir,
            SessionRecorder(transcript, files),
            max_sessions=settings.max_sessions,
            max_sessions_per_tenant=settings.max_sessions_per_tenant,
            replay_budget=ReplayBudget(settings.replay_total_bytes),
        )
        stack.push_async_callback(registry.close_all)

        janitor = Janitor(
            registry,
            files,
            transcript,
            idle_timeout=settings.idle_timeout,
            transcript_ttl=settings.transcript_ttl_seconds,
            interval=settings.janitor_interval,
        )
        janitor.start()
        stack.push_async_callback(janitor.stop)

        log.info("kernels run with sandbox mode %r", launcher.mode)
        auth = Authenticator(settings.api_keys)
        yield AppState(settings, auth, store, pool, registry, transcript, files, janitor)
