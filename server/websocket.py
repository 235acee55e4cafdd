"""The session WebSocket: check the page's origin, authenticate, parse frames, call the
session, forward events.

Each socket subscribes to its session's event log (with `?since=<seq>` it first gets what
it missed; with `?status=off` no `status` events) and forwards the already-encoded events,
awaiting each write so a slow client applies back-pressure to itself only. Frames the
server will not take get a `rejected` event on that socket alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from typing import TYPE_CHECKING, Any

import tornado.httputil
import tornado.iostream
import tornado.web
import tornado.websocket

from kernels.errors import KernelError
from kernels.events import Subscription
from kernels.session import KernelSession
from kernels.storable import clean_text

from .api import bind_request
from .auth import Access, authenticate
from .errors import error_status, log_exception, write_error
from .forwarding import SocketPipe
from .protocol import (
    ControlFrame,
    ProtocolError,
    frame_object,
    parse_frame,
    parse_on_off,
    parse_since,
    validate_user,
)
from .replicas import session_or_pipe

if TYPE_CHECKING:
    from .state import AppState

log = logging.getLogger(__name__)


def check_handshake(headers: tornado.httputil.HTTPHeaders) -> None:
    """A `426 upgrade_required` (JSON) unless the request is a WebSocket handshake tornado
    will accept: its own refusals are plain text, and would come after the session is
    ensured."""
    connection = {v.strip().lower() for v in headers.get("Connection", "").split(",")}
    if (
        headers.get("Upgrade", "").lower() != "websocket"
        or "upgrade" not in connection
        or not headers.get("Sec-WebSocket-Key")
        or headers.get("Sec-WebSocket-Version") != "13"
    ):
        raise ProtocolError(
            426,
            "upgrade_required",
            "this route is a WebSocket: send a WebSocket handshake (Upgrade: websocket, "
            "Connection: Upgrade, Sec-WebSocket-Key, Sec-WebSocket-Version: 13)",
        )


def text_frame(data: bytes) -> bytes:
    """One unmasked, final text frame (RFC 6455 5.2) of UTF-8 `data`, as a server sends it."""
    size = len(data)
    if size < 126:
        return struct.pack("!BB", 0x81, size) + data
    if size <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, size) + data
    return struct.pack("!BBQ", 0x81, 127, size) + data


class SessionSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, state: AppState) -> None:
        self.state = state
        self.tenant = ""
        self.session: KernelSession | None = None
        self.pipe: SocketPipe | None = None
        self.subscription: Subscription | None = None
        self._forwarder: asyncio.Task[None] | None = None
        self._since: int | None = None
        self._skip: frozenset[str] = frozenset()

    @property
    def max_message_size(self) -> int:  # type: ignore[override]
        # Frames a little over the limit get a `rejected` event; far over it, a 1009 close.
        return self.state.settings.max_request_bytes * 2

    def check_origin(self, origin: str) -> bool:
        return self.state.origins.accepts(origin, self.request.host)  # `prepare` said why

    async def prepare(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.state.origins.accepts(origin, self.request.host):
            raise ProtocolError(
                403,
                "origin_not_allowed",
                f"WebSockets from {origin[:200]!r} are not allowed (see --allowed-origins)",
            )
        principal = authenticate(
            self, self.state.auth, Access.USER, self.path_args[0], allow_query=True
        )
        self.tenant = principal.tenant
        bind_request(self, self.tenant)
        self._since = parse_since(self.get_query_argument("since", None))
        if not parse_on_off("status", self.get_query_argument("status", None), True):
            self._skip = frozenset({"status"})
        check_handshake(self.request.headers)  # before a session is touched

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, ProtocolError) and exc.status == 426:  # say what to upgrade to
            self.set_header("Upgrade", "websocket")
            self.set_header("Sec-WebSocket-Version", "13")
        write_error(self, status_code, **kwargs)  # before the upgrade: a JSON error

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not log_exception(self, log, value):
            super().log_exception(typ, value, tb)

    async def get(self, user: str, *args: Any, **kwargs: Any) -> None:
        user = validate_user(user)
        found = await session_or_pipe(
            self, self.state.replicas, self.state.registry, self.tenant, user
        )
        if isinstance(found, SocketPipe):
            self.pipe = found  # another replica runs the user: frames go there and back
        else:
            self.session = found
        await super().get(user, *args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        self.state.socket_opened(self)
        if self.pipe is not None:
            return self.pipe.start(self)
        assert self.session is not None
        events = self.session.events
        older = None
        if self._since is not None and self._since + 1 < events.oldest_seq:
            older = (self._since, events.oldest_seq)  # no longer in memory: from the store
        self.subscription = events.subscribe(self._since, self._skip)
        self._forwarder = asyncio.get_running_loop().create_task(
            self._forward(self.subscription, older), name="ws-forward"
        )

    async def _forward(self, sub: Subscription, older: tuple[int, int] | None) -> None:
        try:
            if older is not None:
                await self._replay_stored(*older)
            while (encoded := await sub.get()) is not None:
                await self._write([encoded, *sub.ready()])
        except tornado.websocket.WebSocketClosedError:
            return
        if sub.reason is not None and self.ws_connection is not None:
            self.close(sub.reason.code, sub.reason.text)

    async def _write(self, messages: list[str]) -> None:
        """Text messages (encoded events) in one write to the socket. Each send wakes the
        client (on a virtual machine, each wake-up is most of a send's cost), and events
        published together are mostly the last of an execution (`status` idle, `done`),
        which its client waits for. Tornado's per-message path, frame by frame: no
        compression is ever negotiated here (`get_compression_options` is not overridden)."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        frames = []
        for message in messages:
            try:
                data = message.encode()
            except UnicodeEncodeError:  # never expected (text is repaired where it enters)
                data = clean_text(message).encode()
            frames.append(text_frame(data))
        try:
            await connection.stream.write(b"".join(frames))
        except tornado.iostream.StreamClosedError as exc:
            raise tornado.websocket.WebSocketClosedError() from exc

    async def _replay_stored(self, after: int, before: int) -> None:
        """Events after < seq < before from the durable transcript, a `gap` for each run of
        seqs that neither memory nor the store still holds."""
        assert self.session is not None
        stored = await self.state.transcript.replay(self.tenant, self.session.user, after, before)
        expected = after + 1
        for seq, body in [*stored, (before, None)]:
            if seq > expected:
                self._send_direct({"type": "gap", "from_seq": expected, "to_seq": seq - 1})
            if body is not None and not (self._skip and json.loads(body)["type"] in self._skip):
                await self._write([body])
            expected = seq + 1

    def _send_direct(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            self.write_message(json.dumps(event, separators=(",", ":")))

    def on_message(self, message: str | bytes) -> None:
        if self.pipe is not None:
            return self.pipe.send(message)
        session = self.session
        if session is None:
            return
        settings = self.state.settings
        frame_id = None
        try:
            obj = frame_object(message)
            frame_id = obj.get("id")
            request = parse_frame(obj, settings.max_code_bytes, settings.limits.max_timeout)
            if isinstance(request, ControlFrame):
                if request.type == "interrupt":
                    session.interrupt()
                else:
                    asyncio.get_running_loop().create_task(
                        self._restart(session), name="ws-restart"
                    )
                return
            session.submit(
                request.code, request.id, request.timeout, list(request.install_packages)
            )
        except (ProtocolError, KernelError) as exc:
            _, code, text = error_status(exc)
            rejected: dict[str, Any] = {
                "type": "rejected",
                "error": {"code": code, "message": text},
            }
            if isinstance(frame_id, str) and len(frame_id) <= 128:
                rejected["id"] = frame_id
            self._send_direct(rejected)

    async def _restart(self, session: KernelSession) -> None:
        try:
            await session.restart()
        except KernelError as exc:
            _, code, text = error_status(exc)
            self._send_direct({"type": "rejected", "error": {"code": code, "message": text}})

    def on_close(self) -> None:
        self.state.socket_closed(self)
        if self.pipe is not None:
            self.pipe.close()
        if self.session is not None and self.subscription is not None:
            self.session.events.unsubscribe(self.subscription)
        if self._forwarder is not None:
            self._forwarder.cancel()
