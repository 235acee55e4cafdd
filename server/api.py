"""`ApiHandler`, the base of every REST handler: auth, bounded bodies that must keep arriving,
JSON answers and JSON errors (`server/errors.py`)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.web

from kernels import log_context

from .auth import authenticate
from .errors import log_exception, write_error
from .protocol import (
    USER_RE,
    ProtocolError,
    parse_content_length,
    parse_json_object,
    validate_user,
)

if TYPE_CHECKING:
    from .state import AppState

log = logging.getLogger(__name__)


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
            self.tenant = authenticate(self, self.state.auth, self.allow_query_token)
            bind_request(self, self.tenant)
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
        write_error(self, status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not log_exception(self, log, value):
            super().log_exception(typ, value, tb)


def bind_request(handler: tornado.web.RequestHandler, tenant: str) -> None:
    """Name the tenant and the path's user on every log line of this request (the
    handler runs in its own task: the binding ends with it)."""
    user = handler.path_args[0] if handler.path_args else None
    if user is not None and not USER_RE.match(user):
        user = "(invalid)"  # never a raw path value in a log line
    log_context.bind(tenant=tenant, user=user)


class NotFoundHandler(ApiHandler):
    auth_required = False

    async def prepare(self) -> None:
        raise ProtocolError(404, "not_found", f"no route for {self.request.path[:200]}")
