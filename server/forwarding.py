"""Forwarding a request to the replica that runs the user's kernel, so a load balancer
without stickiness works.

REST: the request goes on as it came (method, path and query, headers with the
`Authorization`, the body) and the answer comes back as it goes (status, headers, body in
pieces). A handler that takes its body as it arrives (uploads) has it forwarded as it
arrives; other bodies are small and sent whole once in, so a request whose owner turns out
to be dead can still be served here. WebSocket: a socket to the owner, frames piped both
ways, `since` passed on with the rest of the query.

Forwarded requests carry `X-Kss-Forwarded: <replica id> <unix time> <HMAC>` under a key
derived from the data dir's secret (replicas share the data dir, so they share it): the
receiver serves such a request itself and never forwards it again, so forwarding cannot
loop. The header is checked, not trusted: a client that forges one only makes a replica
try to serve the user itself, which the lease still decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import HTTPHeaders, parse_response_start_line
from tornado.web import RequestHandler
from tornado.websocket import WebSocketClientConnection, WebSocketHandler, websocket_connect

HEADER = "X-Kss-Forwarded"
MAX_SKEW = 60.0  # seconds a forwarded request's signature stays valid
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    HEADER.lower(),
}
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 24 * 3600.0  # an execution may wait its turn and run long: the owner times it
MAX_BODY = 1 << 40
BODY_QUEUE = 8  # request body pieces in flight to the owner (back-pressure on the client)


class OwnerUnreachable(Exception):
    """The owner could not be reached at all: nothing was sent back to the client."""


class Signer:
    """Signs and checks `X-Kss-Forwarded` with a key derived from the server's secret."""

    def __init__(self, secret: bytes, replica_id: str) -> None:
        self.key = hmac.new(secret, b"kss replica forwarding", hashlib.sha256).digest()
        self.replica_id = replica_id

    def _mac(self, replica: str, stamp: str, method: str, path: str) -> str:
        text = f"{replica} {stamp} {method} {path}".encode()
        return hmac.new(self.key, text, hashlib.sha256).hexdigest()

    def header(self, method: str, path: str) -> str:
        stamp = str(int(time.time()))
        return f"{self.replica_id} {stamp} {self._mac(self.replica_id, stamp, method, path)}"

    def verify(self, value: str | None, method: str, path: str) -> bool:
        """`value` is a header another replica signed for this request."""
        if not value:
            return False
        parts = value.split(" ")
        if len(parts) != 3 or not parts[1].isdigit():
            return False
        replica, stamp, mac = parts
        if abs(time.time() - int(stamp)) > MAX_SKEW:
            return False
        return hmac.compare_digest(mac, self._mac(replica, stamp, method, path))


_client: AsyncHTTPClient | None = None


def http_client() -> AsyncHTTPClient:
    """One client for every forwarded request, with room for many long ones at once."""
    global _client
    if _client is None:
        _client = AsyncHTTPClient(force_instance=True, max_clients=10_000, max_body_size=MAX_BODY)
    return _client


def forward_headers(handler: RequestHandler, signer: Signer, whole_body: bool) -> HTTPHeaders:
    request = handler.request
    headers = HTTPHeaders()
    for name, value in request.headers.get_all():
        if name.lower() in HOP_BY_HOP or (whole_body and name.lower() == "content-length"):
            continue
        headers.add(name, value)
    headers[HEADER] = signer.header(request.method or "GET", request.path)
    return headers


class RestForward:
    """One REST request on its way to the owner, and its answer on its way back."""

    def __init__(self, handler: RequestHandler, base_url: str, signer: Signer) -> None:
        self.handler = handler
        self.url = base_url + handler.request.uri
        self.signer = signer
        self._head: list[str] = []
        self._answered = False  # the owner's status line and headers are in
        self._body: asyncio.Queue[bytes | None] | None = None
        self._fetch: asyncio.Future[HTTPResponse] | None = None
        self._aborted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start_streaming(self) -> None:
        """Send the request now, its body following as `feed` gets it."""
        self._body = asyncio.Queue(BODY_QUEUE)
        body, aborted = self._body, self._aborted

        async def produce(write: Callable[[bytes], Awaitable[None]]) -> None:
            while True:
                get = asyncio.ensure_future(body.get())
                await asyncio.wait([get, aborted], return_when=asyncio.FIRST_COMPLETED)
                if not get.done():  # the client went away: so does the request to the owner
                    get.cancel()
                    raise ConnectionAbortedError("the client closed its connection")
                if (chunk := get.result()) is None:
                    return
                await write(chunk)

        self._fetch = self._send(forward_headers(self.handler, self.signer, False), produce)

    async def feed(self, chunk: bytes) -> None:
        assert self._body is not None
        await self._body.put(chunk)

    def abort(self) -> None:
        """The client went away: end a body still being streamed to the owner."""
        if not self._aborted.done():
            self._aborted.set_result(None)

    async def finish(self, whole_body: bytes | None = None) -> None:
        """The request is in (`whole_body` when it was not streamed): until the answer has
        gone back. `OwnerUnreachable` when the owner could not be reached at all."""
        if self._fetch is None:
            headers = forward_headers(self.handler, self.signer, True)
            self._fetch = self._send(headers, None, whole_body)
        elif self._body is not None:
            await self._body.put(None)
        try:
            await self._fetch  # any status is an answer, relayed as it came
        except (HTTPClientError, OSError) as exc:  # refused, reset, timed out
            if not self._answered:
                raise OwnerUnreachable(str(exc)) from None
            raise  # cut off half-way: nothing more can be sent (tornado closes the stream)
        if not self._answered:
            raise OwnerUnreachable("the owner closed the connection without an answer")
        self.handler.finish()

    def _send(
        self, headers: HTTPHeaders, producer: Any, body: bytes | None = None
    ) -> asyncio.Future[HTTPResponse]:
        method = self.handler.request.method or "GET"
        if producer is None and method in ("POST", "PUT", "PATCH"):
            body = body or b""
        elif not body:
            body = None
        request = HTTPRequest(
            self.url,
            method=method,
            headers=headers,
            body=body,
            body_producer=producer,
            follow_redirects=False,
            decompress_response=False,
            allow_nonstandard_methods=True,
            connect_timeout=CONNECT_TIMEOUT,
            request_timeout=REQUEST_TIMEOUT,
            header_callback=self._header_line,
            streaming_callback=self._body_piece,
        )
        return http_client().fetch(request, raise_error=False)  # type: ignore[return-value]

    def _header_line(self, line: str) -> None:
        if line.startswith("HTTP/"):
            self._head = [line]
            return
        if line.strip():
            self._head.append(line)
            return
        start = parse_response_start_line(self._head[0].strip())
        if start.code == 100:  # "100 Continue": the real answer follows
            return
        handler = self.handler
        handler.set_status(start.code, start.reason)
        seen: set[str] = set()
        for name, value in HTTPHeaders.parse("".join(self._head[1:])).get_all():
            if name.lower() in HOP_BY_HOP:
                continue
            if name in seen:
                handler.add_header(name, value)
            else:  # the owner's value instead of this handler's default
                handler.set_header(name, value)
                seen.add(name)
        self._answered = True

    def _body_piece(self, chunk: bytes) -> None:
        self.handler.write(chunk)
        self.handler.flush()


class SocketPipe:
    """A WebSocket to the owner, its frames piped to and from a client's socket."""

    def __init__(self, upstream: WebSocketClientConnection) -> None:
        self.upstream = upstream
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, handler: WebSocketHandler, base_url: str, signer: Signer) -> SocketPipe:
        """`OwnerUnreachable` when no socket could be opened to the owner; an
        `HTTPClientError` when the owner refused it (its status and body say why)."""
        url = "ws" + base_url.removeprefix("http") + handler.request.uri
        headers = forward_headers(handler, signer, True)
        for name in [n for n in headers if n.lower().startswith("sec-websocket-")]:
            del headers[name]  # this connection's handshake is its own (no compression)
        request = HTTPRequest(
            url,
            headers=headers,
            connect_timeout=CONNECT_TIMEOUT,
            request_timeout=CONNECT_TIMEOUT * 2,
        )
        try:
            upstream = await websocket_connect(request, max_message_size=handler.max_message_size)
        except HTTPClientError as exc:
            if exc.code == 599:
                raise OwnerUnreachable(str(exc)) from None
            raise
        except OSError as exc:
            raise OwnerUnreachable(str(exc)) from None
        return cls(upstream)

    def start(self, handler: WebSocketHandler) -> None:
        """Pipe the owner's frames to the client until either side closes."""

        async def pump() -> None:
            while (message := await self.upstream.read_message()) is not None:
                try:
                    await handler.write_message(message, binary=isinstance(message, bytes))
                except Exception:
                    self.upstream.close()
                    return
            code, reason = self.upstream.close_code, self.upstream.close_reason
            if handler.ws_connection is not None:
                handler.close(code, reason)

        self._task = asyncio.get_running_loop().create_task(pump(), name="ws-pipe")

    def send(self, message: str | bytes) -> None:
        self.upstream.write_message(message, binary=isinstance(message, bytes))

    def close(self) -> None:
        self.upstream.close()
        if self._task is not None:
            self._task.cancel()
