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
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.httputil import (
    HTTPHeaders,
    HTTPMessageDelegate,
    RequestStartLine,
    ResponseStartLine,
    parse_response_start_line,
)
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import DefaultLoopResolver, Resolver
from tornado.tcpclient import TCPClient
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
KEEP_IDLE = 20.0  # seconds a connection to another replica is kept idle (it closes its own
# idle connections after --header-timeout, 60 s by default)
KEEP_PER_REPLICA = 64


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


class LiteralResolver(Resolver):
    """An IP address as it is; names through the default resolver. (Tornado's default hands
    every address, literal or not, to a thread for `getaddrinfo`: a thread hop per forwarded
    request, and advertised URLs are usually addresses.)"""

    def initialize(self) -> None:
        self.fallback = DefaultLoopResolver()

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return await self.fallback.resolve(host, port, family)
        return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, (host, port))]


CLIENT_PARAMS = HTTP1ConnectionParameters(decompress=False, max_body_size=MAX_BODY)


class Forwarder:
    """What forwarding needs, one per server: the signer, kept-alive connections to the
    other replicas, an HTTP client for streamed bodies."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.resolver = LiteralResolver()
        self.connections = Connections(self.resolver)
        self._client: AsyncHTTPClient | None = None

    def http_client(self) -> AsyncHTTPClient:
        """One client for every streamed request, with room for many long ones at once."""
        if self._client is None:
            self._client = AsyncHTTPClient(
                force_instance=True,
                max_clients=10_000,
                max_body_size=MAX_BODY,
                resolver=self.resolver,
            )
        return self._client

    def close(self) -> None:
        self.connections.close()
        if self._client is not None:
            self._client.close()


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

    def __init__(self, handler: RequestHandler, base_url: str, forwarder: Forwarder) -> None:
        self.handler = handler
        self.url = base_url + handler.request.uri
        self.forwarder = forwarder
        self.signer = forwarder.signer
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
        if self._fetch is None and self.url.startswith("http://"):
            await self._exchange(whole_body or b"")
            self.handler.finish()
            return
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
        return self.forwarder.http_client().fetch(request, raise_error=False)  # type: ignore[return-value]

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
        self._answer(start.code, start.reason, HTTPHeaders.parse("".join(self._head[1:])))

    def _answer(self, code: int, reason: str, headers: HTTPHeaders) -> None:
        """The owner's status and headers, as this handler's."""
        handler = self.handler
        handler.set_status(code, reason)
        seen: set[str] = set()
        for name, value in headers.get_all():
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

    async def _exchange(self, body: bytes) -> None:
        """The request with its whole body over a kept-alive connection to the owner (one
        TCP connect and one owner-side connection set-up fewer per forwarded request). A
        reused connection the owner had closed while idle is retried once on a new one:
        nothing was answered on it, so the owner did not take the request."""
        parts = urlsplit(self.url)
        where = (parts.hostname or "", parts.port or 80)
        method = self.handler.request.method or "GET"
        headers = forward_headers(self.handler, self.signer, True)
        headers["Host"] = parts.netloc
        if body or method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for _ in range(2):
            stream, reused = await self.forwarder.connections.take(where)
            conn = HTTP1Connection(stream, True, CLIENT_PARAMS)
            relay = _Relay(self)
            try:
                await conn.write_headers(RequestStartLine(method, target, "HTTP/1.1"), headers)
                if body:
                    await conn.write(body)
                conn.finish()
                await conn.read_response(relay)
            except (StreamClosedError, OSError) as exc:
                if self._answered:
                    raise
                stream.close()
                if reused:
                    continue
                raise OwnerUnreachable(str(exc)) from None
            if not self._answered:
                stream.close()
                if reused:
                    continue
                raise OwnerUnreachable("the owner closed the connection without an answer")
            if not stream.closed() and relay.complete:
                self.forwarder.connections.give(where, conn.detach())
            return
        raise OwnerUnreachable("the owner closed the connection twice without an answer")


class _Relay(HTTPMessageDelegate):
    """The owner's answer, read by tornado's HTTP/1.1 client code, relayed as it comes."""

    def __init__(self, forward: RestForward) -> None:
        self.forward = forward
        self.complete = False

    def headers_received(
        self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders
    ) -> None:
        assert isinstance(start_line, ResponseStartLine)
        if start_line.code != 100:
            self.forward._answer(start_line.code, start_line.reason, headers)

    def data_received(self, chunk: bytes) -> None:
        self.forward._body_piece(chunk)

    def finish(self) -> None:
        self.complete = True


class Connections:
    """Idle kept-alive connections to the other replicas, by (host, port)."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._idle: dict[tuple[str, int], list[tuple[IOStream, float]]] = {}

    async def take(self, where: tuple[str, int]) -> tuple[IOStream, bool]:
        """A connection to `where`, and whether it is a reused one."""
        idle = self._idle.get(where, [])
        now = time.monotonic()
        while idle:
            stream, since = idle.pop()
            if not stream.closed() and now - since < KEEP_IDLE:
                return stream, True
            stream.close()
        try:
            stream = await TCPClient(resolver=self.resolver).connect(
                *where, timeout=CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            raise OwnerUnreachable(str(exc)) from None
        stream.set_nodelay(True)
        return stream, False

    def close(self) -> None:
        for idle in self._idle.values():
            for stream, _ in idle:
                stream.close()
        self._idle.clear()

    def give(self, where: tuple[str, int], stream: IOStream) -> None:
        idle = self._idle.setdefault(where, [])
        if len(idle) < KEEP_PER_REPLICA:
            idle.append((stream, time.monotonic()))
        else:
            stream.close()


class SocketPipe:
    """A WebSocket to the owner, its frames piped to and from a client's socket."""

    def __init__(self, upstream: WebSocketClientConnection) -> None:
        self.upstream = upstream
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, handler: WebSocketHandler, base_url: str, forwarder: Forwarder
    ) -> SocketPipe:
        """`OwnerUnreachable` when no socket could be opened to the owner; an
        `HTTPClientError` when the owner refused it (its status and body say why)."""
        url = "ws" + base_url.removeprefix("http") + handler.request.uri
        headers = forward_headers(handler, forwarder.signer, True)
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
