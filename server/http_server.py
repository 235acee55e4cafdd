"""The connection edge: the HTTP server that bounds what one client can hold.

Every connection costs a file descriptor until it closes, so one client holding thousands of
half-sent requests would take the server's descriptors from everyone else. Here:

- connections are counted per client address and in total; one over a cap is closed the
  moment it is accepted, before a byte of it is read (`--max-connections-per-address`,
  `--max-connections`, whose default leaves descriptors for the kernels);
- the soft open-file limit is raised to the hard one at start-up;
- a request's headers must arrive within `--header-timeout` (tornado's
  `idle_connection_timeout`, which is also how long a kept-alive connection may idle); bodies
  are held to `--body-idle-timeout` by `handlers.ApiHandler`; WebSockets have their pings;
- each accepted stream is an `EdgeStream` (JSON answers for tornado's own errors, lingering
  close);
- should descriptors still run out, the listening socket sheds waiting connections (with a
  spare descriptor kept for that) instead of failing `accept` on every loop iteration.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
from collections.abc import Iterable
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from .config import Settings
from .edge_stream import EdgeStream

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # request line and headers; more is a 431
FDS_RESERVED = 256  # store, logs, listening sockets, ZMQ's own, files being sent
FDS_PER_KERNEL = 16  # measured about 6 (ZMQ sockets, pipes); room for the sandbox's
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard one; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft if soft != resource.RLIM_INFINITY else want
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, want, exc)
        return soft
    return want


def default_max_connections(nofile: int, settings: Settings) -> int:
    """Connections that fit in `nofile` descriptors after the kernels' share; each may also
    hold a file open (an upload, a download)."""
    reserve = FDS_RESERVED + FDS_PER_KERNEL * (settings.max_sessions + settings.pool_size)
    return max((nofile - reserve) // 2, nofile // 8)


class EdgeServer(HTTPServer):
    """tornado's HTTPServer with connection caps and an `EdgeStream` per connection."""

    def initialize(  # type: ignore[override]
        self,
        request_callback: tornado.web.Application,
        max_connections: int,
        max_per_address: int,
        **kwargs: Any,
    ) -> None:
        super().initialize(request_callback, **kwargs)
        self.max_connections = max_connections
        self.max_per_address = max_per_address  # 0: no cap
        self._by_host: dict[str, int] = {}
        self._streams: set[EdgeStream] = set()

    def open_connections(self, host: str | None = None) -> int:
        """Connections open now (lingering ones included), from `host` or in total."""
        return len(self._streams) if host is None else self._by_host.get(host, 0)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        super().add_sockets([Listener(s) for s in sockets])  # type: ignore[misc]

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) and address else ""
        held = self._by_host.get(host, 0)
        if len(self._streams) >= self.max_connections or 0 < self.max_per_address <= held:
            log.warning(
                "refused a connection from %s: it holds %d, all hold %d (caps %d and %d)",
                host,
                held,
                len(self._streams),
                self.max_per_address,
                self.max_connections,
            )
            stream.close()
            return
        self._by_host[host] = held + 1
        edge = EdgeStream(stream, host, self._release)
        self._streams.add(edge)
        super().handle_stream(edge, address)  # type: ignore[arg-type]

    def _release(self, edge: EdgeStream) -> None:
        if edge not in self._streams:
            return
        self._streams.discard(edge)
        left = self._by_host.pop(edge.host, 1) - 1
        if left:
            self._by_host[edge.host] = left

    async def close_all_connections(self) -> None:
        """Close every connection, WebSockets and lingering closes included."""
        await super().close_all_connections()
        await asyncio.gather(*(edge.abort() for edge in list(self._streams)))


class Listener:
    """A listening socket whose `accept` survives running out of descriptors: it frees a spare
    one, accepts and closes waiting connections with it, and tells tornado's accept loop there
    is nothing to accept, so the loop neither spins nor logs a traceback per attempt."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._spare = _spare_fd()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def fileno(self) -> int:
        return self._sock.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        try:
            return self._sock.accept()
        except OSError as exc:
            if exc.errno not in OUT_OF_FDS:
                raise
            shed = self._shed()
            log.error("cannot accept connections (%s): closed %d waiting", exc.strerror, shed)
            raise BlockingIOError(exc.errno, exc.strerror) from None

    def _shed(self) -> int:
        if self._spare is None:
            self._spare = _spare_fd()
            return 0
        os.close(self._spare)
        shed = 0
        try:
            while shed < 128:
                conn, _ = self._sock.accept()  # takes the descriptor just freed
                conn.close()
                shed += 1
        except OSError:
            pass
        self._spare = _spare_fd()
        return shed

    def close(self) -> None:
        self._sock.close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None


def _spare_fd() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def make_http_server(app: tornado.web.Application, settings: Settings) -> EdgeServer:
    """The server `python -m server` and the tests run: caps, timeouts and limits set."""
    nofile = raise_nofile_limit()
    total = settings.max_connections or default_max_connections(nofile, settings)
    log.info(
        "connections: %d at most, %d per address (open-file limit %d)",
        total,
        settings.max_connections_per_address,
        nofile,
    )
    return EdgeServer(
        app,
        max_connections=total,
        max_per_address=settings.max_connections_per_address,
        max_body_size=settings.max_request_bytes * 2,
        max_header_size=MAX_HEADER_BYTES,
        idle_connection_timeout=settings.header_timeout,
        # what one connection may buffer: the largest WebSocket frame (see websocket.py)
        max_buffer_size=settings.max_request_bytes * 2 + MAX_HEADER_BYTES,
        xheaders=False,
    )
