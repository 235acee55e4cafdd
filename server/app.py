"""Route table and lifespan: start the store, pool, sessions and janitor; stop them all."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import tornado.web

from kernels.launcher import KernelCommand, Launcher, LocalLauncher, default_kernel_python
from kernels.pool import KernelPool
from kernels.session import Cell, KernelSession, Limits
from kernels.sessions import SessionRegistry

from . import handlers as h
from .auth import Authenticator
from .config import Settings
from .janitor import Janitor
from .store.base import SessionRecord, Store
from .store.sqlite import SqliteStore
from .websocket import SessionSocket

log = logging.getLogger(__name__)

USER = r"([^/]+)"


@dataclass
class AppState:
    settings: Settings
    auth: Authenticator
    store: Store
    pool: KernelPool
    registry: SessionRegistry


def make_routes(state: AppState) -> list[tuple[str, type, dict[str, AppState]]]:
    kw = {"state": state}
    return [
        (r"/api/health", h.HealthHandler, kw),
        (r"/api/status", h.StatusHandler, kw),
        (r"/api/sessions", h.SessionsHandler, kw),
        (rf"/api/sessions/{USER}", h.SessionHandler, kw),
        (rf"/api/sessions/{USER}/execute", h.ExecuteHandler, kw),
        (rf"/api/sessions/{USER}/interrupt", h.InterruptHandler, kw),
        (rf"/api/sessions/{USER}/restart", h.RestartHandler, kw),
        (rf"/api/sessions/{USER}/ws", SessionSocket, kw),
    ]


def make_app(state: AppState) -> tornado.web.Application:
    return tornado.web.Application(
        make_routes(state),  # type: ignore[arg-type]
        default_handler_class=h.NotFoundHandler,
        default_handler_args={"state": state},
        websocket_ping_interval=30,
        websocket_ping_timeout=30,
    )


def make_launcher(settings: Settings) -> Launcher:
    command = KernelCommand(settings.kernel_python or default_kernel_python())
    if settings.sandbox == "on":
        raise RuntimeError("the sandbox is not available in this build; use --no-sandbox")
    log.warning("SANDBOX OFF: kernels run as this server's user with no isolation")
    return LocalLauncher(command)


def work_dir_root(settings: Settings) -> Path:
    return settings.data_dir / "files"


def _record(session: KernelSession, state: str | None = None) -> SessionRecord:
    return SessionRecord(
        tenant=session.tenant,
        user=session.user,
        created=session.created,
        last_activity=session.last_activity,
        execution_count=session.execution_count,
        state=state or str(session.state),
    )


@contextlib.asynccontextmanager
async def lifespan(settings: Settings) -> AsyncIterator[AppState]:
    """Everything the app needs, started in order and stopped in reverse."""
    store: Store = SqliteStore(settings.data_dir / "kss.sqlite3")
    await store.open()
    pool = KernelPool(
        make_launcher(settings),
        settings.runtime_dir,
        warm_size=settings.pool_size,
        start_timeout=settings.kernel_start_timeout,
    )
    limits = Limits(
        default_timeout=settings.exec_timeout,
        max_timeout=settings.max_exec_timeout,
        interrupt_grace=settings.interrupt_grace,
        client_cap=settings.output_cap_bytes,
        text_cap=settings.text_cap_bytes,
        max_queue=settings.max_queue,
        replay_events=settings.replay_events,
        replay_bytes=settings.replay_bytes,
    )
    root = work_dir_root(settings)
    registry = SessionRegistry(
        pool, limits, lambda t, u: root / t / u, max_sessions=settings.max_sessions
    )

    async def save_cell(session: KernelSession, cell: Cell) -> None:
        await store.put_session(_record(session))

    async def save_session(session: KernelSession) -> None:
        await store.put_session(_record(session))

    registry.cell_hooks.append(save_cell)
    registry.session_hooks.append(save_session)
    state = AppState(settings, Authenticator(settings.api_keys), store, pool, registry)
    janitor = Janitor(state)
    try:
        await pool.start()
        janitor.start()
        yield state
    finally:
        await janitor.stop()
        await registry.close_all()
        await pool.close()
        await store.close()
