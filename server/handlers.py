"""REST handlers, and the one error writer producing `{"error": {"code", "message"}}`."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.web
from tornado.httputil import responses

from kernels.errors import (
    CapacityExceeded,
    KernelDied,
    KernelError,
    KernelStartFailed,
    QueueFull,
    SessionClosed,
    SessionNotFound,
)
from kernels.files import (
    BadFileName,
    FileAreaPurged,
    FileBusy,
    FileNotFound,
    FileTooLarge,
    QuotaExceeded,
)

from .auth import bearer_token
from .protocol import (
    ProtocolError,
    parse_content_length,
    parse_execute,
    parse_json_object,
    validate_user,
)

if TYPE_CHECKING:
    from .app import AppState

log = logging.getLogger(__name__)

# Descriptors or memory ran out: the server's state, not the request's fault, and passing.
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)

DOMAIN_STATUS: dict[type[KernelError], int] = {
    BadFileName: 400,
    FileNotFound: 404,  # and FileExpired
    FileBusy: 409,
    FileAreaPurged: 409,
    FileTooLarge: 413,
    QuotaExceeded: 413,
    SessionNotFound: 404,
    SessionClosed: 409,
    QueueFull: 429,
    CapacityExceeded: 503,
    KernelStartFailed: 503,
    KernelDied: 503,
}


def error_status(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, message) for any exception a handler lets escape."""
    if isinstance(exc, ProtocolError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, KernelError):
        status = next((DOMAIN_STATUS[t] for t in type(exc).__mro__ if t in DOMAIN_STATUS), 500)
        return status, exc.code, str(exc)
    if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES:
        return 503, "server_busy", "the server is short of resources; try again shortly"
    if isinstance(exc, tornado.web.HTTPError):
        code = responses.get(exc.status_code, "error").lower().replace(" ", "_")
        return exc.status_code, code, exc.log_message or responses.get(exc.status_code, "error")
    return 500, "internal_error", "internal server error"


def authenticate(handler: tornado.web.RequestHandler, state: AppState, allow_query: bool) -> str:
    token = bearer_token(handler.request.headers.get("Authorization"))
    if token is None and allow_query:
        token = handler.get_query_argument("token", None)
    tenant = state.auth.tenant_for(token)
    if tenant is None:
        handler.set_header("WWW-Authenticate", 'Bearer realm="kss"')
        raise ProtocolError(401, "unauthorized", "a valid API key is required")
    return tenant


@tornado.web.stream_request_body
class ApiHandler(tornado.web.RequestHandler):
    """Base of every REST handler: auth, bounded bodies that must keep arriving, JSON answers
    and errors. Subclasses take body bytes in `body_received`."""

    auth_required = True
    allow_query_token = False

    def initialize(self, state: AppState) -> None:
        self.state = state
        self.tenant = ""
        self.content_length: int | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._body_at = 0.0  # when body bytes last arrived
        self._body_timer: asyncio.TimerHandle | None = None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def body_limit(self) -> int:
        return self.state.settings.max_request_bytes

    async def prepare(self) -> None:
        if self.auth_required:
            self.tenant = authenticate(self, self.state, self.allow_query_token)
        self.content_length = parse_content_length(self.request.headers.get("Content-Length"))
        if self.content_length is not None and self.content_length > self.body_limit():
            raise ProtocolError(413, "payload_too_large", f"body over {self.body_limit()} bytes")
        if self.content_length or "Transfer-Encoding" in self.request.headers:
            self._watch_body()

    def _watch_body(self) -> None:
        """Answer 408 once the body stops arriving for `--body-idle-timeout` seconds."""
        loop = asyncio.get_running_loop()
        self._body_at = loop.time()
        self._body_timer = loop.call_later(
            self.state.settings.body_idle_timeout, self._body_idle_check
        )
        # Set by tornado (web.py `_HandlerDelegate.finish`) once the whole body has arrived.
        self.request._body_future.add_done_callback(lambda _: self._unwatch_body())

    def _body_idle_check(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.state.settings.body_idle_timeout
        idle = loop.time() - self._body_at
        if idle < timeout:
            self._body_timer = loop.call_later(timeout - idle, self._body_idle_check)
            return
        self._body_timer = None
        if not self._finished:
            exc = ProtocolError(
                408, "request_timeout", f"the request body stalled for {timeout:g} s"
            )
            log.info("%s %s -> %s", self.request.method, self.request.path, exc)
            self.send_error(408, exc_info=(type(exc), exc, None))

    def _unwatch_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        self._body_at = asyncio.get_running_loop().time()
        return self.body_received(chunk)

    def body_received(self, chunk: bytes) -> Awaitable[None] | None:
        """A piece of the request body (JSON bodies are kept, up to `body_limit`)."""
        if self._too_large:
            return None
        self._size += len(chunk)
        if self._size > self.body_limit():
            self._too_large = True
            self._chunks.clear()
        else:
            self._chunks.append(chunk)
        return None

    def on_finish(self) -> None:
        self._unwatch_body()

    def on_connection_close(self) -> None:
        self._unwatch_body()
        super().on_connection_close()

    def json_body(self) -> dict[str, Any]:
        if self._too_large:
            raise ProtocolError(413, "payload_too_large", f"body over {self.body_limit()} bytes")
        return parse_json_object(b"".join(self._chunks))

    def user_arg(self, user: str) -> str:
        return validate_user(user)  # tornado has already percent-decoded it

    def write_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if exc_info is not None:
            status, code, message = error_status(exc_info[1])
        else:
            status, code = status_code, responses.get(status_code, "error").lower()
            message = responses.get(status_code, "error")
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if not self.request._body_future.done():  # answered before the body: no reuse
            self.set_header("Connection", "close")
        self.finish(json.dumps({"error": {"code": code.replace(" ", "_"), "message": message}}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ProtocolError | KernelError | tornado.web.HTTPError):
            log.info("%s %s -> %s", self.request.method, self.request.path, value)
        elif isinstance(value, OSError) and value.errno in OUT_OF_RESOURCES:
            log.error("%s %s -> 503: %s", self.request.method, self.request.path, value.strerror)
        else:
            super().log_exception(typ, value, tb)


class NotFoundHandler(ApiHandler):
    auth_required = False

    async def prepare(self) -> None:
        raise ProtocolError(404, "not_found", f"no route for {self.request.path[:200]}")


class HealthHandler(ApiHandler):
    auth_required = False

    def get(self) -> None:
        self.write_json({"status": "ok"})


class StatusHandler(ApiHandler):
    """The tenant's own view: its sessions, the sandbox, the store. Numbers about the whole
    server (the pool, the disk, other tenants) are for operators, not tenants."""

    async def get(self) -> None:
        self.write_json(
            {
                "sessions": len(self.state.registry.list(self.tenant)),
                "sandbox": self.state.pool.launcher.mode,
                "store": await self.state.store.status(self.tenant),
            }
        )


class SessionsHandler(ApiHandler):
    async def get(self) -> None:
        records = {
            r.user: {**r.public(), "state": "closed"}  # live sessions overwrite this below
            for r in await self.state.transcript.sessions(self.tenant)
        }
        for session in self.state.registry.list(self.tenant):
            records[session.user] = session.info()
        self.write_json({"sessions": [records[u] for u in sorted(records)]})


class SessionHandler(ApiHandler):
    async def put(self, user: str) -> None:
        user = self.user_arg(user)
        session, created = await self.state.registry.ensure(self.tenant, user)
        self.write_json(session.info(), 201 if created else 200)

    async def get(self, user: str) -> None:
        user = self.user_arg(user)
        session = self.state.registry.find(self.tenant, user)
        if session is not None:
            return self.write_json(session.info())
        record = await self.state.transcript.session(self.tenant, user)
        if record is None:
            raise SessionNotFound(f"no session for user {user!r}")
        self.write_json({**record.public(), "state": "closed"})  # no kernel now

    async def delete(self, user: str) -> None:
        user = self.user_arg(user)
        purge = self.get_query_argument("purge", "false").lower() in ("1", "true", "yes")
        live = self.state.registry.find(self.tenant, user)
        record = await self.state.transcript.session(self.tenant, user)
        if live is None and record is None and not purge:
            raise SessionNotFound(f"no session for user {user!r}")
        if live is not None:
            await self.state.registry.close(self.tenant, user)
        if purge:
            # Files and their records are purged whether or not there was ever a session;
            # uploads in flight end with `file_area_purged`.
            had_files = await self.state.files.area(self.tenant, user).apurge()
            await self.state.transcript.delete(self.tenant, user)
            if live is None and record is None and not had_files:
                raise SessionNotFound(f"no session and no files for user {user!r}")
        self.write_json({"user": user, "state": "closed", "purged": purge})


class ExecuteHandler(ApiHandler):
    async def post(self, user: str) -> None:
        user = self.user_arg(user)
        settings = self.state.settings
        request = parse_execute(
            self.json_body(), settings.max_code_bytes, settings.max_exec_timeout
        )
        session, _ = await self.state.registry.ensure(self.tenant, user)
        execution = session.submit(request.code, request.id, request.timeout)
        cell = await execution.done
        self.write_json(cell.summary())


class InterruptHandler(ApiHandler):
    async def post(self, user: str) -> None:
        session = self.state.registry.get(self.tenant, self.user_arg(user))
        self.write_json({"interrupted": session.interrupt()})


class RestartHandler(ApiHandler):
    async def post(self, user: str) -> None:
        session = self.state.registry.get(self.tenant, self.user_arg(user))
        started = time.perf_counter()
        await session.restart()
        self.write_json(
            {**session.info(), "restart_ms": round((time.perf_counter() - started) * 1000, 3)}
        )
