"""The stream under every HTTP connection: tornado's own answers become JSON errors, and
every close lets the client read what it was sent.

tornado 6.6's HTTP/1 code (`http1connection.py`) answers a malformed request with a bare
`HTTP/1.1 400 Bad Request` and no body; closes without a word when a header block is over
`max_header_size` (its IOStream raises `UnsatisfiableReadError` and closes itself); and
closes the socket with the rest of a refused body unread, so the kernel answers the
client's next segment with a reset that destroys the 413 before a client that is still
sending (urllib, anything without `Expect: 100-continue`) reads it. `EdgeStream` wraps the
accepted IOStream and delegates everything except:

- `write` of tornado's bare 400, which becomes a JSON 400;
- reads with a byte bound (the header block, a chunk-size line), bounded by a regex of our
  own so that going over the bound is answered (431, 400) instead of closing in silence;
- `close`, which is a lingering close: tornado sees the stream closed at once, while the
  socket stays open until what was written has left, the write side is shut down, and what
  the client still sends is read and dropped (LINGER_BYTES at most, LINGER_IDLE between
  reads, LINGER_SECONDS in all).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.httputil import responses
from tornado.iostream import IOStream, StreamClosedError

log = logging.getLogger(__name__)

LINGER_BYTES = 64 << 20  # more than any body we take, so an over-limit upload is read out
LINGER_IDLE = 2.0
LINGER_SECONDS = 30.0
LINGER_READ = 64 * 1024
BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"  # what tornado writes on an HTTPInputError
INTERIM_100 = b"HTTP/1.1 100 "  # tornado's answer to `Expect: 100-continue`: not the answer


@functools.lru_cache(maxsize=16)
def error_response(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response carrying the API's JSON error; the connection then closes."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {responses.get(status, 'Error')}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


MALFORMED = error_response(
    400,
    "bad_request",
    "malformed HTTP request (request line, headers, Content-Length or chunked encoding)",
)


@functools.lru_cache(maxsize=8)
def bounded(pattern: bytes, max_bytes: int) -> re.Pattern[bytes]:
    """Everything up to `pattern`, or else the first max_bytes + 1 bytes: a read that ends
    either way, so the IOStream never has a bound of its own to refuse (and close) on."""
    return re.compile(rb"\A(?:[\s\S]*?(?:%s)|[\s\S]{%d})" % (pattern, max_bytes + 1))


class EdgeStream:
    """An accepted connection's IOStream; see the module docstring for what it changes."""

    def __init__(
        self, stream: IOStream, host: str, on_closed: Callable[[EdgeStream], None]
    ) -> None:
        self._stream = stream
        self.host = host
        self._on_closed = on_closed  # told once, when the socket itself is closed
        self._closing = False
        self._close_callback: Callable[[], None] | None = None
        self._reading: asyncio.Future[Any] | None = None  # the read tornado awaits
        self._inner: asyncio.Future[Any] | None = None  # the IOStream's read behind it
        self._header_read = False
        self._answered = False  # bytes written since this request's headers were read
        self._written: Awaitable[None] | None = None
        self._linger: asyncio.Task[None] | None = None
        stream.set_close_callback(self._stream_closed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    # -- reads ------------------------------------------------------------------------------

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        if max_bytes is None:
            return self._read(lambda: self._stream.read_until_regex(regex))
        # tornado reads a request's header block this way, and only this way
        self._answered = False
        over = error_response(
            431, "headers_too_large", f"the request line and headers are over {max_bytes} bytes"
        )
        return self._read(
            lambda: self._stream.read_until_regex(bounded(regex, max_bytes)),
            (max_bytes, over),
            header=True,
        )

    def read_until(self, delimiter: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        if max_bytes is None:
            return self._read(lambda: self._stream.read_until(delimiter))
        pattern = bounded(re.escape(delimiter), max_bytes)  # tornado: a chunk-size line
        return self._read(lambda: self._stream.read_until_regex(pattern), (max_bytes, MALFORMED))

    def read_bytes(self, num_bytes: int, partial: bool = False) -> Awaitable[bytes]:
        return self._read(lambda: self._stream.read_bytes(num_bytes, partial))

    def read_into(self, buf: bytearray, partial: bool = False) -> Awaitable[int]:
        return self._read(lambda: self._stream.read_into(buf, partial))

    def read_until_close(self) -> Awaitable[bytes]:
        return self._read(self._stream.read_until_close)

    def _read(
        self,
        start: Callable[[], Awaitable[Any]],
        limit: tuple[int, bytes] | None = None,
        header: bool = False,
    ) -> asyncio.Future[Any]:
        if self._closing:
            raise StreamClosedError()
        inner = asyncio.ensure_future(start())
        outer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inner, self._reading, self._header_read = inner, outer, header

        def done(f: asyncio.Future[Any]) -> None:
            exc = None if f.cancelled() else f.exception()  # retrieved, even if unused
            if outer.done():
                return  # closed under it; the lingering close drops what came
            if exc is not None:
                _fail(outer, exc)
            elif f.cancelled():
                outer.cancel()
            elif limit is not None and len(f.result()) > limit[0]:
                log.info("%s: a line over %d bytes; answered and closed", self.host, limit[0])
                self._answer_and_close(limit[1])
            else:
                outer.set_result(f.result())

        inner.add_done_callback(done)
        return outer

    # -- writes -----------------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> Awaitable[None]:
        if self._closing:
            raise StreamClosedError()
        if len(data) == len(BARE_400) and bytes(data) == BARE_400:
            if self._answered:  # the answer to this request has begun: add nothing to it
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                done.set_result(None)
                return done
            data = MALFORMED
        if bytes(data[:13]) != INTERIM_100:
            self._answered = True
        self._written = self._stream.write(data)
        return self._written

    def _answer_and_close(self, response: bytes) -> None:
        if not self._answered and not self._closing and not self._stream.closed():
            self._answered = True
            self._written = self._stream.write(response)
        self.close()

    # -- closing ----------------------------------------------------------------------------

    def closed(self) -> bool:
        return self._closing or self._stream.closed()

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def close(self, exc_info: Any = False) -> None:
        if self._closing:
            return
        if self._partial_header():
            self._answered = True
            self._written = self._stream.write(
                error_response(408, "request_timeout", "the request headers did not all arrive")
            )
        self._closing = True
        self._run_close_callback()
        if self._reading is not None and not self._reading.done():
            _fail(self._reading, StreamClosedError())
        if not self._stream.closed():
            self._linger = asyncio.get_running_loop().create_task(
                self._linger_close(), name="http-linger-close"
            )

    def _partial_header(self) -> bool:
        """Closed while part of a header block has arrived: tornado's header timeout."""
        pending = self._header_read and self._reading is not None and not self._reading.done()
        # IOStream keeps no public count of bytes read but not yet consumed.
        return pending and getattr(self._stream, "_read_buffer_size", 0) > 0

    async def _linger_close(self) -> None:
        stream = self._stream
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                if self._written is not None:
                    await self._written  # the answer leaves before our side shuts
                stream.socket.shutdown(socket.SHUT_WR)
                drained = 0
                if self._inner is not None and not self._inner.done():
                    await asyncio.wait_for(self._inner, LINGER_IDLE)  # a read tornado began
                while drained < LINGER_BYTES:
                    chunk = await asyncio.wait_for(
                        stream.read_bytes(LINGER_READ, partial=True), LINGER_IDLE
                    )
                    drained += len(chunk)
        except (StreamClosedError, TimeoutError, OSError, AttributeError):
            pass  # the client closed, went quiet, or sent too much: close now
        finally:
            stream.close()

    async def abort(self) -> None:
        """Close now, without lingering (server shutdown)."""
        if self._linger is not None:
            self._linger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._linger
        self._stream.close()

    def _run_close_callback(self) -> None:
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            asyncio.get_running_loop().call_soon(callback)

    def _stream_closed(self) -> None:
        self._closing = True
        self._run_close_callback()
        self._on_closed(self)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    future.set_exception(exc)
    future.exception()  # whoever stopped waiting for it is not told again at GC
