"""`ApiHandler`, the base of every REST handler: auth, bounded bodies that must keep arriving,
JSON answers and JSON errors (`server/errors.py`)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.web

from kernels.errors import SessionElsewhere
from kernels.session import KernelSession

from .auth import authenticate
from .errors import log_exception, write_error
from .forwarding import OwnerUnreachable, RestForward
from .protocol import ProtocolError, parse_content_length, parse_json_object, validate_user
from .replicas import unavailable

if TYPE_CHECKING:
    from transcript.store.leases import Lease

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
        self._forward: RestForward | None = None  # the request goes to another replica
        self._forward_user = ""
        self._lease: Lease | None = None
        self._streamed = False  # its body goes on as it arrives

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def body_limit(self) -> int:
        return self.state.settings.max_request_bytes

    async def prepare(self) -> None:
        if self.auth_required:
            self.tenant = authenticate(self, self.state.auth, self.allow_query_token)
        self.content_length = parse_content_length(self.request.headers.get("Content-Length"))
        if self.content_length is not None and self.content_length > self.body_limit():
            raise ProtocolError(413, "payload_too_large", f"body over {self.body_limit()} bytes")
        if self.content_length or "Transfer-Encoding" in self.request.headers:
            self._watch_body()
        if self.auth_required:
            await self._forward_if_elsewhere()

    @property
    def forwarding(self) -> bool:
        """The request goes to the replica that runs its user (subclasses' `prepare` stop)."""
        return self._forward is not None

    async def _forward_if_elsewhere(self) -> None:
        """A request for a user another replica runs goes there (`server/forwarding.py`):
        tornado then calls `_forwarded`, once the body is in, instead of the method."""
        replicas = self.state.replicas
        if replicas is None or not self.path_args:
            return
        try:
            user = validate_user(self.path_args[0])
        except ProtocolError:
            return  # the handler answers 400
        lease = await replicas.owner(self.state.registry, self.request, self.tenant, user)
        if lease is None:
            return
        self._forward_user, self._lease = user, lease
        self._forward = RestForward(self, lease.url, replicas.forwarder)
        if type(self).body_received is not ApiHandler.body_received:  # uploads: stream it on
            self._streamed = True
            self._forward.start_streaming()
        # tornado calls the method named after the request's, looked up on the instance
        setattr(self, (self.request.method or "get").lower(), self._forwarded)

    async def _forwarded(self, *args: str) -> None:
        assert self._forward is not None and self._lease is not None
        try:
            return await self._forward.finish(None if self._streamed else self._whole_body())
        except OwnerUnreachable:
            if self._streamed:
                raise unavailable(self._lease.url) from None
        replicas = self.state.replicas
        assert replicas is not None
        lease = await replicas.after_expiry(self._lease, self.tenant, self._forward_user)
        if lease is not None:
            return await self.forward_to(lease.url)
        self._forward = None  # the owner died and its lease ran out: served here
        method = getattr(type(self), (self.request.method or "get").lower())
        await method(self, *args)

    async def forward_to(self, url: str) -> None:
        """Send this request, whose body is in, to the replica at `url`; relay its answer."""
        replicas = self.state.replicas
        assert replicas is not None
        self._forward = RestForward(self, url, replicas.forwarder)
        try:
            await self._forward.finish(self._whole_body())
        except OwnerUnreachable:
            raise unavailable(url) from None

    def _whole_body(self) -> bytes:
        if self._too_large:
            raise ProtocolError(413, "payload_too_large", f"body over {self.body_limit()} bytes")
        return b"".join(self._chunks)

    async def ensure_session(self, user: str) -> tuple[KernelSession, bool] | None:
        """The user's session, created here if need be; None when another replica took the
        user first, and the request has been answered from there."""
        try:
            return await self.state.registry.ensure(self.tenant, user)
        except SessionElsewhere as exc:
            replicas = self.state.replicas
            if replicas is None or replicas.forwarded(self.request):
                raise
            await self.forward_to(exc.where)
            return None

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
        if self._streamed:
            assert self._forward is not None
            return self._forward.feed(chunk)
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
        if self._forward is not None:
            self._forward.abort()
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


class NotFoundHandler(ApiHandler):
    auth_required = False

    async def prepare(self) -> None:
        raise ProtocolError(404, "not_found", f"no route for {self.request.path[:200]}")
