"""Our ZMTP 3.0 peer against real libzmq sockets (pyzmq's ROUTER and PUB, bound on ipc in a
tmp dir, as a kernel binds them), and against peers that do not speak ZMTP."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from kernels import zmtp
from tests.polling import until

LIMIT = 64 * 1024
IDENTITY = b"peer-1"


class Inbox:
    """Collects what a peer receives, and whether it was told its connection was lost."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[zmtp.Message] = asyncio.Queue()
        self.lost = 0

    def __call__(self, message: zmtp.Message) -> None:
        self.messages.put_nowait(message)

    def on_lost(self) -> None:
        self.lost += 1

    async def next(self) -> zmtp.Message:
        return await asyncio.wait_for(self.messages.get(), 10)


class Context:
    """A libzmq context whose sockets are all closed at teardown."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sockets: list[zmq.asyncio.Socket] = []

    def socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def context() -> Iterator[Context]:
    ctx = Context()
    yield ctx
    ctx.close()


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "socket")


def router(context: Context, path: str) -> zmq.asyncio.Socket:
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unknown peer is an error, not a silent drop
    sock.bind(f"ipc://{path}")
    return sock


@contextlib.asynccontextmanager
async def dealer(path: str, inbox: Inbox, limit: int = LIMIT) -> AsyncIterator[zmtp.ZmtpPeer]:
    peer = await asyncio.wait_for(
        zmtp.connect(path, b"DEALER", inbox, limit, identity=IDENTITY, on_lost=inbox.on_lost), 10
    )
    try:
        yield peer
    finally:
        peer.close()


async def introduced(sock: zmq.asyncio.Socket, peer: zmtp.ZmtpPeer) -> None:
    """Until the ROUTER knows the peer (it learns the identity from the peer's READY)."""
    peer.send([b"hello"])
    assert await asyncio.wait_for(sock.recv_multipart(), 10) == [IDENTITY, b"hello"]


async def test_a_dealer_and_a_router_exchange_multipart_messages(
    context: Context, path: str
) -> None:
    sock, inbox = router(context, path), Inbox()
    async with dealer(path, inbox) as peer:
        frames = [b"", b"short", b"x" * 255, b"y" * 256, b"z" * 60_000]  # both frame sizes
        peer.send(frames)
        assert await asyncio.wait_for(sock.recv_multipart(), 10) == [IDENTITY, *frames]
        await sock.send_multipart([IDENTITY, *frames])
        await sock.send_multipart([IDENTITY, b"single"])
        assert await inbox.next() == zmtp.Message(frames)
        assert await inbox.next() == zmtp.Message([b"single"])
    assert inbox.lost == 0  # closed by us: nobody is told


async def test_a_sub_subscribes_to_everything_a_pub_sends(context: Context, path: str) -> None:
    pub = context.socket(zmq.PUB)
    pub.bind(f"ipc://{path}")
    inbox = Inbox()
    peer = await asyncio.wait_for(zmtp.connect(path, b"SUB", inbox, LIMIT), 10)
    try:

        async def published() -> bool:  # a PUB drops what it sends before the subscription
            await pub.send_multipart([b"any topic", b"probe"])
            return not inbox.messages.empty()

        await until(published)
        assert await inbox.next() == zmtp.Message([b"any topic", b"probe"])
        await pub.send_multipart([b"", b"body", b"w" * 1000])
        while (message := await inbox.next()).frames[-1] == b"probe":
            pass
        assert message == zmtp.Message([b"", b"body", b"w" * 1000])
    finally:
        peer.close()


async def test_the_subscription_is_the_zmtp_3_0_subscribe_all_message(
    context: Context, path: str
) -> None:
    xpub = context.socket(zmq.XPUB)  # a PUB that shows the subscriptions it gets
    xpub.bind(f"ipc://{path}")
    peer = await asyncio.wait_for(zmtp.connect(path, b"SUB", Inbox(), LIMIT), 10)
    try:
        assert await asyncio.wait_for(xpub.recv(), 10) == b"\x01"  # subscribe, empty topic
    finally:
        peer.close()


async def test_one_frame_over_the_limit_is_counted_and_discarded(
    context: Context, path: str
) -> None:
    sock, inbox = router(context, path), Inbox()
    async with dealer(path, inbox) as peer:
        await introduced(sock, peer)
        await sock.send_multipart([IDENTITY, b"head", b"z" * (1 << 20)])
        await sock.send_multipart([IDENTITY, b"next"])
        assert await inbox.next() == zmtp.Message([b"head"], dropped=1 << 20)
        assert await inbox.next() == zmtp.Message([b"next"])  # the stream is still in step
        assert len(peer._buf) < LIMIT  # the discarded bytes were never buffered


async def test_many_frames_over_the_limit_are_counted_and_discarded(
    context: Context, path: str
) -> None:
    sock, inbox = router(context, path), Inbox()
    async with dealer(path, inbox) as peer:
        await introduced(sock, peer)
        frames = [bytes([i]) * 1000 for i in range(200)]
        await sock.send_multipart([IDENTITY, *frames])
        await sock.send_multipart([IDENTITY, b"next"])
        cut = await inbox.next()
        kept = len(cut.frames)
        assert 0 < kept < 200 and cut.frames == frames[:kept]  # enough to see whose it was
        assert cut.dropped == (200 - kept) * 1000  # the rest counted, byte for byte
        assert await inbox.next() == zmtp.Message([b"next"])


async def test_a_message_under_the_limit_is_kept_however_it_arrives(
    context: Context, path: str
) -> None:
    sock, inbox = router(context, path), Inbox()
    async with dealer(path, inbox, limit=1 << 20) as peer:
        await introduced(sock, peer)
        big = b"b" * 600_000  # more than one read of the transport (256 KiB)
        await sock.send_multipart([IDENTITY, big])
        assert await inbox.next() == zmtp.Message([big])


async def test_more_frames_than_allowed_are_counted_and_discarded(
    context: Context, path: str
) -> None:
    sock, inbox = router(context, path), Inbox()
    async with dealer(path, inbox, limit=1 << 20) as peer:
        await introduced(sock, peer)
        await sock.send_multipart([IDENTITY, *[b"1"] * (zmtp.MAX_FRAMES + 100)])
        await sock.send_multipart([IDENTITY, b"next"])
        assert await inbox.next() == zmtp.Message([b"1"] * zmtp.MAX_FRAMES, dropped=100)
        assert await inbox.next() == zmtp.Message([b"next"])


# -- peers that do not speak ZMTP ----------------------------------------------------------


class FakePeer:
    """A unix socket server that writes `script` to whoever connects, then reads until the
    other end closes (recording that it did)."""

    def __init__(self, script: bytes) -> None:
        self.script = script
        self.closed_by_client = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.script)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            while await reader.read(65536):
                pass
        self.closed_by_client.set()
        writer.close()


@contextlib.asynccontextmanager
async def fake_peer(path: str, script: bytes) -> AsyncIterator[FakePeer]:
    fake = FakePeer(script)
    server = await asyncio.start_unix_server(fake.handle, path)
    try:
        yield fake
    finally:
        server.close()
        await server.wait_closed()


def command(name: bytes, payload: bytes) -> bytes:
    body = bytes((len(name),)) + name + payload
    return bytes((zmtp.COMMAND, len(body))) + body


READY = command(b"READY", b"\x0bSocket-Type" + struct.pack(">I", 6) + b"ROUTER")


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",  # not even the first byte
        b"\xff" + b"\x00" * 8 + b"\x7f\x02" + b"\x00" * 53,  # ZMTP 2
        zmtp.GREETING.replace(b"NULL", b"CURV", 1),  # a security mechanism we do not speak
    ],
    ids=["http", "zmtp-2", "curve"],
)
async def test_garbage_instead_of_a_greeting_closes_the_connection(
    path: str, garbage: bytes
) -> None:
    async with fake_peer(path, garbage) as fake:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(zmtp.connect(path, b"DEALER", Inbox(), LIMIT), 10)
        await asyncio.wait_for(fake.closed_by_client.wait(), 10)


@pytest.mark.parametrize(
    "garbage",
    [
        bytes((zmtp.COMMAND | zmtp.LONG,)) + struct.pack(">Q", 10_000),  # a huge command
        command(b"ERROR", b"\x05nope!"),  # the peer refuses us
    ],
    ids=["huge-command", "error"],
)
async def test_garbage_after_the_handshake_closes_the_connection_and_says_so(
    path: str, garbage: bytes
) -> None:
    async with fake_peer(path, zmtp.GREETING + READY + garbage) as fake:
        inbox = Inbox()
        peer = await asyncio.wait_for(
            zmtp.connect(path, b"DEALER", inbox, LIMIT, on_lost=inbox.on_lost), 10
        )
        await asyncio.wait_for(fake.closed_by_client.wait(), 10)
        await until(lambda: peer.closed)
        assert inbox.lost == 1 and inbox.messages.empty()
        with pytest.raises(ConnectionError):
            peer.send([b"anything"])


async def test_connect_retries_until_the_socket_file_exists(context: Context, path: str) -> None:
    inbox = Inbox()
    connecting = asyncio.create_task(zmtp.connect(path, b"DEALER", inbox, LIMIT, identity=IDENTITY))
    await asyncio.sleep(0.1)  # several attempts: it must still be trying, not have failed
    assert not connecting.done()
    sock = router(context, path)
    peer = await asyncio.wait_for(connecting, 10)
    try:
        await introduced(sock, peer)
        await sock.send_multipart([IDENTITY, b"welcome"])
        assert await inbox.next() == zmtp.Message([b"welcome"])
    finally:
        peer.close()
