"""Route table and lifespan: start the store, sandbox, pool, sessions and janitor; stop them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
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
from packages.allowlist import Allowlist
from packages.installer import PackageInstaller
from transcript.store.base import Store
from transcript.store.mongo import MongoStore
from transcript.store.sqlite import SqliteStore
from transcript.transcript import Transcript

from . import sessions_http as h
from .api import NotFoundHandler
from .auth import Authenticator
from .config import Settings
from .console_http import CONSOLE_ROUTES
from .files_http import FILE_ROUTES
from .forwarding import Forwarder, Signer
from .janitor import Janitor
from .keys import server_secret
from .logs import log_request
from .metrics_http import MetricsHandler
from .notebook_http import BundleHandler, NotebookHandler, NotebookLinkHandler, NotesHandler
from .openapi_http import OpenApiHandler
from .origins import Origins, parse_origins
from .recorder import SessionRecorder
from .replicas import LeaseGate, LeaseKeeper, Replicas
from .state import AppState
from .websocket import SessionSocket

log = logging.getLogger(__name__)

# Route templates name their parameters; each becomes one path segment, `name` the rest.
PARAMS = {"user": r"([^/]+)", "name": r"(.+)"}


def route_table() -> list[tuple[str, type[tornado.web.RequestHandler]]]:
    """Every route: (template, handler)."""
    return [
        ("/api/health", h.HealthHandler),
        ("/api/openapi.json", OpenApiHandler),
        ("/api/status", h.StatusHandler),
        ("/api/sessions", h.SessionsHandler),
        ("/api/sessions/{user}", h.SessionHandler),
        ("/api/sessions/{user}/execute", h.ExecuteHandler),
        ("/api/sessions/{user}/interrupt", h.InterruptHandler),
        ("/api/sessions/{user}/restart", h.RestartHandler),
        ("/api/sessions/{user}/packages", h.PackagesHandler),
        ("/api/sessions/{user}/notebook", NotebookHandler),
        ("/api/sessions/{user}/notebook/link", NotebookLinkHandler),
        ("/api/sessions/{user}/bundle", BundleHandler),
        ("/api/sessions/{user}/token", h.TokenHandler),
        ("/api/sessions/{user}/notes", NotesHandler),
        ("/api/sessions/{user}/ws", SessionSocket),
        *FILE_ROUTES,
        ("/metrics", MetricsHandler),
        *CONSOLE_ROUTES,
    ]


def pattern(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], template)


def make_routes(state: AppState) -> list[tuple[str, type, dict[str, Any]]]:
    return [(pattern(t), handler, {"state": state}) for t, handler in route_table()]


def make_app(state: AppState) -> tornado.web.Application:
    return tornado.web.Application(
        make_routes(state),  # type: ignore[arg-type]
        default_handler_class=NotFoundHandler,
        default_handler_args={"state": state},
        websocket_ping_interval=30,
        websocket_ping_timeout=30,
        log_function=log_request,
        route_templates=[(re.compile(pattern(t)), t) for t, _ in route_table()],
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


def store_for(settings: Settings) -> Store:
    """MongoDB when a URI is set (replicas share it), else SQLite in the data dir."""
    if settings.mongodb_uri:
        return MongoStore(settings.mongodb_uri, settings.mongodb_db)
    return SqliteStore(settings.data_dir / "kss.sqlite3")


def replicas_for(
    settings: Settings, store: Store, transcript: Transcript, secret: bytes
) -> Replicas | None:
    """With `--replica-id`: this replica among those sharing the MongoDB store."""
    if not settings.replica_id:
        return None
    assert isinstance(store, MongoStore) and store.leases is not None
    return Replicas(
        store.leases,
        settings.replica_id,
        settings.advertise_url,
        settings.lease_seconds,
        transcript,
        Forwarder(Signer(secret, settings.replica_id)),
    )


def package_installer(settings: Settings) -> PackageInstaller | None:
    """The installer of allowlisted packages, or None with `--package-allowlist off`."""
    if settings.package_allowlist == "off":
        return None
    listed = Path(settings.package_allowlist) if settings.package_allowlist else None
    return PackageInstaller(
        settings.data_dir / "packages",
        Allowlist.read(listed),
        settings.kernel_python or default_kernel_python(),  # wheels for the kernels' Python
        index=settings.package_index,
        only_binary=settings.package_only_binary,
        timeout=settings.package_install_timeout,
        max_bytes=settings.package_max_bytes,
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

        store = store_for(settings)
        await store.open()  # RuntimeError naming the store when it cannot be used
        stack.push_async_callback(store.close)

        file_pool = FairPool(settings.file_workers)
        stack.push_async_callback(file_pool.close)  # queued work cancelled, running not awaited
        secret = server_secret(settings.data_dir)
        work_dirs = WorkDirs(settings.data_dir / "work", secret)
        await asyncio.to_thread(work_dirs.adopt_legacy, settings.data_dir / "files")
        # Replicas share the data dir; each wipes its own staging dir at start.
        staging = "staging-" + settings.replica_id if settings.replica_id else "staging"
        files = FileAreas(work_dirs, settings.data_dir / staging, store, file_pool, settings.files)
        files.reset_staging()  # uploads a crash cut short: never visible to a kernel, gone now

        transcript = Transcript(store, settings.transcript_buffer)
        replicas = replicas_for(settings, store, transcript, secret)
        # Cells a dead server left running; with replicas, only users no live one runs.
        await transcript.recover(replicas.is_orphan if replicas else None)
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
            packages=package_installer(settings),
            gate=LeaseGate(replicas) if replicas else None,
            replay_budget=ReplayBudget(settings.replay_total_bytes),
        )
        stack.push_async_callback(registry.close_all)
        if replicas is not None:
            stack.callback(replicas.forwarder.close)
            keeper = LeaseKeeper(replicas, registry)
            keeper.start()
            stack.push_async_callback(keeper.stop)
            log.info(
                "replica %r at %s, leases of %g s",
                replicas.id,
                replicas.url,
                replicas.lease_seconds,
            )

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
        auth = Authenticator(settings.api_keys, secret)
        origins = Origins(parse_origins(settings.allowed_origins))
        yield AppState(
            settings,
            auth,
            store,
            pool,
            registry,
            transcript,
            files,
            janitor,
            origins=origins,
            replicas=replicas,
        )


async def drain(state: AppState, timeout: float) -> None:
    """The graceful part of a stop, while the server still listens: no new sessions or
    executions (503 `draining`, and /api/health says so), accepted executions get `timeout`
    seconds and then an interrupt, the transcript is flushed, and every WebSocket is closed
    with 1001 "going away" (given a moment for the close handshake)."""
    cut = await state.registry.drain(timeout)
    await state.transcript.flush()
    for socket in list(state.sockets):
        socket.close(1001, "the server is shutting down")
    if state.sockets:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.sockets_closed.wait(), 2)
    log.info("drained (%d executions cut short)", cut)
