"""`ApiHandler`, the base of every REST handler: auth (each route's `access`), CORS for the
allowed origins, bounded bodies that must keep arriving, JSON answers and JSON errors
(`server/errors.py`), and signed links in answers when asked for (`?links=signed`)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import tornado.web

from kernels import log_context
from kernels.errors import SessionElsewhere
from kernels.session import KernelSession

from .auth import DEFAULT_TTL, Access, Principal, authenticate
from .errors import log_exception, write_error
from .forwarding import OwnerUnreachable, RestForward
from .protocol import (
    USER_RE,
    ProtocolError,
    parse_content_length,
    parse_count,
    parse_json_object,
    validate_user,
)
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
    # What credentials reach the route: the tenant's key only by default; routes of one
    # user's session (whose first path argument is the user) also take that user's token.
    access = Access.KEY

    def initialize(self, state: AppState) -> None:
        self.state = state
        self.tenant = ""
        self.principal: Principal | None = None
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
        self.allow_origin()  # RequestHandler.__init__ set the default headers before this

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def allow_origin(self) -> None:
        """CORS headers for a page of an allowed origin (again after an error's `clear`)."""
        self.set_header("Vary", "Origin")
        origin = self.request.headers.get("Origin")
        if origin is not None and self.state.origins.is_foreign_allowed(origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header(
                "Access-Control-Expose-Headers", "Content-Disposition, ETag, WWW-Authenticate"
            )

    def body_limit(self) -> int:
        return self.state.settings.max_request_bytes

    async def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return  # a CORS preflight never needs a key (`options`)
        if self.auth_required:
            user = self.path_args[0] if self.access is not Access.KEY else None
            self.principal = authenticate(
                self, self.state.auth, self.access, user, self.allow_query_token
            )
            self.tenant = self.principal.tenant
            bind_request(self, self.tenant)
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
        self.allow_origin()  # `send_error` cleared the headers: a page may read its errors
        write_error(self, status_code, **kwargs)

    def options(self, *args: str) -> None:
        """A CORS preflight: allowed origins get the methods and headers, no key needed."""
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.state.origins.is_foreign_allowed(origin):
            raise ProtocolError(
                403, "origin_not_allowed", "this origin is not in --allowed-origins"
            )
        self.set_header("Allow", "GET, POST, PUT, DELETE, OPTIONS")
        if origin is not None:
            self.set_header("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def link_ttl(self) -> float | None:
        """With `?links=signed`, the life of the signed links to put in the answer
        (`?ttl=` seconds, default an hour, at most `--max-token-ttl`); else None."""
        links = self.get_query_argument("links", None)
        if links is None:
            return None
        if links != "signed":
            raise ProtocolError(400, "invalid_field", "'links' must be 'signed'")
        return self.ttl_arg(self.query_ttl())

    def query_ttl(self) -> int | str | None:
        """`?ttl=` as a number when it is one (`ttl_arg` refuses what is not)."""
        raw = self.get_query_argument("ttl", None)
        return raw if raw is None else parse_count(raw) or raw

    def ttl_arg(self, ttl: Any) -> float:
        """A life in seconds a client asked for (None: the default), checked."""
        most = self.state.settings.max_token_ttl
        if ttl is None:
            return min(DEFAULT_TTL, most)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= most:
            raise ProtocolError(
                400, "invalid_field", f"'ttl' must be a number of seconds, 1 to {most:g}"
            )
        return ttl

    def link(self, url: str, ttl: float | None) -> str:
        """`url`, signed for `ttl` seconds when a signed link was asked for."""
        if ttl is None:
            return url
        assert self.principal is not None
        return self.state.auth.signed_url(self.principal, url, ttl)[0]

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


def iso_time(ts: float) -> str:
    """A time as the API writes times: ISO 8601 UTC, milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class NotFoundHandler(ApiHandler):
    auth_required = False

    async def prepare(self) -> None:
        raise ProtocolError(404, "not_found", f"no route for {self.request.path[:200]}")
