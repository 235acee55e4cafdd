"""The client end of a kernel's ZMQ sockets, spoken directly: ZMTP 3.0 over a unix socket.

libzmq has no limit on the size of a whole message, only on each of its frames, and holds
every frame of a message in memory before the application sees any: a kernel that sends one
message of a thousand 10 MB frames (or one 150 MB frame) puts gigabytes into the server. We
read the kernel's sockets ourselves instead: frame headers are parsed as bytes arrive, and
once a message passes `max_message_bytes` the rest of it is counted and discarded, never
buffered. The kernel is an untrusted peer, so the parser also bounds the frames per message
and closes the connection on anything that is not ZMTP.

Only what a Jupyter client needs: the NULL mechanism, a DEALER peer (shell, control) and a
SUB peer subscribed to everything (iopub), as in RFC 23 (ZMTP 3.0), which libzmq 4 speaks to
peers that announce it. The kernel binds; we connect once, when its socket file exists.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

GREETING = (
    b"\xff"
    + b"\x00" * 8
    + b"\x7f"  # signature
    + b"\x03\x00"  # version 3.0
    + b"NULL".ljust(20, b"\x00")  # mechanism
    + b"\x00"  # as-server: no
    + b"\x00" * 31  # filler
)
MORE, LONG, COMMAND = 0x01, 0x02, 0x04
MAX_FRAMES = 4096  # frames in one message; a Jupyter message has about eight
MAX_COMMAND_BYTES = 4096


class ProtocolViolation(Exception):
    """The peer does not speak ZMTP 3 as we expect; the connection is closed."""


@dataclass
class Message:
    """One received message: its frames, or, when it was too large, what was kept of it.

    `frames` then holds the leading frames that fit (enough to see whose reply it was) and
    `dropped` the bytes discarded.
    """

    frames: list[bytes]
    dropped: int = 0


def _frame_header(size: int, flags: int) -> bytes:
    if size < 256:
        return bytes((flags, size))
    return bytes((flags | LONG,)) + struct.pack(">Q", size)


def _command(name: bytes, properties: dict[bytes, bytes]) -> bytes:
    body = bytes((len(name),)) + name
    for key, value in properties.items():
        body += bytes((len(key),)) + key + struct.pack(">I", len(value)) + value
    return _frame_header(len(body), COMMAND) + body


class ZmtpPeer(asyncio.Protocol):
    """One connection to a kernel socket; `on_message` gets every complete `Message`."""

    def __init__(
        self,
        socket_type: bytes,
        on_message: Callable[[Message], None],
        max_message_bytes: int,
        identity: bytes = b"",
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.socket_type = socket_type
        self.on_message = on_message
        self.on_lost = on_lost
        self.max_message_bytes = max_message_bytes
        self.identity = identity
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self._buf = bytearray()
        self._greeted = False
        self._frames: list[bytes] = []
        self._size = 0  # bytes of the message being read, kept or not
        self._dropped = 0
        self._skip = 0  # bytes of the current frame still to discard
        self._skip_more = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(GREETING)
        props = {b"Socket-Type": self.socket_type}
        if self.identity:
            props[b"Identity"] = self.identity
        transport.write(_command(b"READY", props))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
            if self._skip == 0 and not self._skip_more:
                self._finish_message()
            if not data:
                return
        self._buf += data
        try:
            while self._step():
                pass
        except ProtocolViolation as exc:
            log.warning("kernel socket closed: %s", exc)
            if self.transport is not None:
                self.transport.close()  # connection_lost then tells the owner

    def connection_lost(self, exc: Exception | None) -> None:
        was_open, self.closed = not self.closed, True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("the kernel closed its socket"))
        elif was_open and self.on_lost is not None:
            self.on_lost()

    # -- sending ----------------------------------------------------------------------------

    def send(self, frames: list[bytes]) -> None:
        """Queue one multipart message (asyncio buffers what the socket cannot take yet)."""
        if self.transport is None or self.closed:
            raise ConnectionError("not connected to the kernel")
        last = len(frames) - 1
        out = bytearray()
        for i, frame in enumerate(frames):
            out += _frame_header(len(frame), 0 if i == last else MORE)
            out += frame
        self.transport.write(bytes(out))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- parsing ----------------------------------------------------------------------------

    def _step(self) -> bool:
        """Consume one unit (greeting or frame) from the buffer; False when more is needed."""
        buf = self._buf
        if not self._greeted:
            if len(buf) < 64:
                if len(buf) >= 1 and buf[0] != 0xFF:
                    raise ProtocolViolation("not a ZMTP greeting")
                return False
            if buf[0] != 0xFF or buf[9] != 0x7F or buf[10] < 3:
                raise ProtocolViolation("not a ZMTP 3 greeting")
            if bytes(buf[12:16]) != b"NULL":
                raise ProtocolViolation("the kernel asks for a security mechanism")
            del buf[:64]
            self._greeted = True
            return True
        if len(buf) < 2:
            return False
        flags = buf[0]
        if flags & LONG:
            if len(buf) < 9:
                return False
            size = struct.unpack_from(">Q", buf, 1)[0]
            start = 9
        else:
            size = buf[1]
            start = 2
        if flags & COMMAND:
            if size > MAX_COMMAND_BYTES:
                raise ProtocolViolation("command frame too large")
            if len(buf) < start + size:
                return False
            body = bytes(buf[start : start + size])
            del buf[: start + size]
            self._command(body)
            return True
        more = bool(flags & MORE)
        # Counted once, when the frame is taken: a frame still arriving is looked at again.
        if len(self._frames) >= MAX_FRAMES or self._size + size > self.max_message_bytes:
            # Too large: count the frame and discard its bytes as they come.
            self._size += size
            self._dropped += size
            have = min(size, len(buf) - start)
            del buf[: start + have]
            self._skip = size - have
            self._skip_more = more
            if self._skip:
                if buf:  # cannot happen: the frame's bytes are not all here yet
                    raise ProtocolViolation("frame accounting error")
                return False
            if not more:
                self._finish_message()
            return True
        if len(buf) < start + size:
            return False
        self._size += size
        self._frames.append(bytes(buf[start : start + size]))
        del buf[: start + size]
        if not more:
            self._finish_message()
        return True

    def _finish_message(self) -> None:
        message = Message(self._frames, self._dropped)
        self._frames, self._size, self._dropped, self._skip_more = [], 0, 0, False
        if not self.ready.done():
            return  # data before the handshake completed: not a message of the session
        self.on_message(message)

    def _command(self, body: bytes) -> None:
        name_len = body[0] if body else 0
        name = body[1 : 1 + name_len]
        if name == b"READY":
            if not self.ready.done():
                if self.socket_type == b"SUB" and self.transport is not None:
                    # Subscribe to every topic, ZMTP 3.0 style: a message, sent only once
                    # the handshake is complete (libzmq drops a peer that sends it sooner).
                    self.transport.write(_frame_header(1, 0) + b"\x01")
                self.ready.set_result(None)
        elif name == b"ERROR":
            reason = body[2 + name_len :].decode(errors="replace")[:200]
            raise ProtocolViolation(f"the kernel refused the connection: {reason}")
        # anything else (PING from a 3.1 peer, unknown commands) is ignored


async def connect(
    path: str,
    socket_type: bytes,
    on_message: Callable[[Message], None],
    max_message_bytes: int,
    identity: bytes = b"",
    on_lost: Callable[[], None] | None = None,
) -> ZmtpPeer:
    """Connect to the kernel's socket at `path` and complete the handshake.

    The socket file appears when the kernel binds it; until then this retries (the caller
    bounds the wait with a timeout, as it does the kernel's start).
    """
    loop = asyncio.get_running_loop()
    delay = 0.002
    while True:
        peer = ZmtpPeer(socket_type, on_message, max_message_bytes, identity, on_lost)
        try:
            await loop.create_unix_connection(lambda p=peer: p, path)  # type: ignore[misc]
        except (FileNotFoundError, ConnectionRefusedError):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        await peer.ready
        return peer
