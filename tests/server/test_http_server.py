"""The connection edge through a real server (sandbox on): stalled requests are timed out,
one client address cannot take the connections of everyone else, running out of file
descriptors neither floods the log nor stops the server for good."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from server.config import Settings
from server.http_server import default_max_connections
from tests.client import Api
from tests.conftest import KEY, KEY2, RunningServer, free_port, make_settings, running_server
from tests.polling import until
from tests.server.server_process import wait_healthy

ATTACKER = "127.0.0.2"  # loopback answers on all of 127/8: a second client address
PER_ADDRESS = 20
BODY_IDLE, HEADER_TIMEOUT = 1.0, 2.0


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("edge"),
        sandbox="on",
        kernel_uid_first=2_300_000,
        kernel_uid_last=2_300_099,
        body_idle_timeout=BODY_IDLE,
        header_timeout=HEADER_TIMEOUT,
        max_connections_per_address=PER_ADDRESS,
    )
    async with running_server(settings) as server:
        yield server


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(srv: RunningServer, source: str = ATTACKER) -> Conn:
    return await asyncio.open_connection("127.0.0.1", srv.settings.port, local_addr=(source, 0))


async def read_all(conn: Conn, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    reader, writer = conn
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return data


def error_of(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]["code"]


def stalled_upload(n: int) -> bytes:
    """Headers of a 100-byte upload and 7 of its bytes: the rest never comes."""
    head = (
        f"PUT /api/sessions/mallory/files/f{n}.bin HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {KEY2}\r\nContent-Length: 100\r\n\r\n"
    )
    return head.encode() + b"1234567"


async def test_stalled_bodies_are_408_and_one_address_cannot_crowd_out_others(srv) -> None:
    stalled = [await connect(srv) for _ in range(PER_ADDRESS)]
    for n, (_, writer) in enumerate(stalled):
        writer.write(stalled_upload(n))
    await until(lambda: srv.http.open_connections(ATTACKER) == PER_ADDRESS)
    started = time.monotonic()
    extra = [await connect(srv) for _ in range(10)]
    refused = await asyncio.gather(*(read_all(c, 5) for c in extra))
    assert refused == [b""] * 10  # closed at once, nothing read or answered
    assert time.monotonic() - started < 3
    r = await srv.api.execute("bystander", "6 * 7")  # another address is served meanwhile
    assert r["status"] == "ok" and r["result"] == {"text/plain": "42"}
    answers = await asyncio.gather(*(read_all(c, BODY_IDLE + 10) for c in stalled))
    assert [error_of(a) for a in answers] == [(408, "request_timeout")] * PER_ADDRESS
    await until(lambda: srv.http.open_connections(ATTACKER) == 0)
    assert not (srv.state.registry.work_dir_for("t2", "mallory")).exists() or not any(
        srv.state.registry.work_dir_for("t2", "mallory").iterdir()
    )


async def test_a_slow_but_steady_body_is_not_timed_out(srv) -> None:
    reader, writer = await connect(srv, "127.0.0.1")
    body = b"x" * 30
    writer.write(
        b"PUT /api/sessions/steady/files/s.bin HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    started = time.monotonic()
    for i in range(0, len(body), 10):  # 2.5 body-idle timeouts in all, never one idle
        writer.write(body[i : i + 10])
        await writer.drain()
        await asyncio.sleep(BODY_IDLE / 2)
    assert time.monotonic() - started > BODY_IDLE * 1.4
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 201"), head
    writer.close()


async def test_partial_headers_are_408_and_idle_connections_are_closed(srv) -> None:
    started = time.monotonic()
    partial = await connect(srv)
    partial[1].write(b"GET /api/health HTTP/1.1\r\nHo")
    idle = await connect(srv)
    kept = await connect(srv)
    kept[1].write(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    answered = await asyncio.wait_for(kept[0].readuntil(b'{"status":"ok"}'), 10)
    assert answered.startswith(b"HTTP/1.1 200")
    results = await asyncio.gather(*(read_all(c, HEADER_TIMEOUT + 10) for c in (partial, idle)))
    assert error_of(results[0]) == (408, "request_timeout")
    assert results[1] == b""  # nothing was asked: closed without a word
    assert await read_all(kept, HEADER_TIMEOUT + 10) == b""  # keep-alive idles out too
    assert HEADER_TIMEOUT <= time.monotonic() - started < HEADER_TIMEOUT + 5


async def test_websockets_are_not_held_to_the_idle_timeouts(srv) -> None:
    ws = await srv.api.ws("quiet")
    code = f"import time; time.sleep({HEADER_TIMEOUT + BODY_IDLE + 0.5}); 'awake'"
    events = await ws.run(code, "q")  # the client sends nothing while the kernel sleeps
    assert events[-1]["status"] == "ok"
    assert [e["data"] for e in events if e["type"] == "result"] == [{"text/plain": "'awake'"}]
    ws.close()


def test_the_open_file_limit_is_raised_and_leaves_room_for_kernels(srv) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY
    settings = Settings(max_sessions=100, pool_size=2)
    assert default_max_connections(20_000, settings) == (20_000 - 256 - 16 * 102) // 2
    assert default_max_connections(1024, settings) == 128  # never none
    assert srv.http.max_connections == default_max_connections(soft, srv.settings)


def set_nofile(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def spawn(argv: list[str], log_path: Path, nofile: int) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: set_nofile(nofile)
        )


@contextlib.asynccontextmanager
async def server_process(data_dir: Path, nofile: int, *flags: str) -> AsyncIterator[tuple]:
    """`python -m server` with an open-file limit of `nofile`; yields (api, port, log path)."""
    port = free_port()
    log_path = data_dir / "server.log"
    argv = [sys.executable, "-m", "server", "--port", str(port), "--data-dir", str(data_dir)]
    argv += ["--api-key", f"t1={KEY}", "--pool-size", "0", "--no-sandbox", *flags]
    proc = spawn(argv, log_path, nofile)
    api = Api(f"http://127.0.0.1:{port}", KEY)
    try:
        await wait_healthy(api, proc)
        yield api, port, log_path
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def open_many(port: int, n: int) -> list[Conn]:
    async def one() -> Conn | None:
        with contextlib.suppress(OSError):
            return await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
        return None

    return [c for c in await asyncio.gather(*(one() for _ in range(n))) if c is not None]


async def test_a_connection_flood_leaves_the_server_serving_others(tmp_path) -> None:
    # Defaults but a small per-address cap; 1,000 connections each with a stalled body.
    async with server_process(tmp_path, 1024, "--max-connections-per-address", "50") as (
        api,
        port,
        log_path,
    ):
        conns = await open_many(port, 1000)
        for n, (_, writer) in enumerate(conns):
            writer.write(stalled_upload(n).replace(KEY2.encode(), KEY.encode()))
        for _ in range(3):
            resp = await api.call("GET", "/api/health", key=None, timeout=5)
            assert resp.status == 200
        for _, writer in conns:
            writer.close()
        text = log_path.read_text()
        assert "Traceback" not in text and len(text) < 20_000, text[-2000:]
        assert text.count("refused a connection from 127.0.0.2") <= 5


async def test_running_out_of_descriptors_is_logged_once_and_passes(tmp_path) -> None:
    # Caps set above what the descriptors allow: accept() itself fails.
    flags = ("--max-connections", "5000", "--max-connections-per-address", "0")
    async with server_process(tmp_path, 200, *flags) as (api, port, log_path):
        conns = await open_many(port, 400)

        def out_of_descriptors() -> bool:
            return "Too many open files" in log_path.read_text()

        await until(out_of_descriptors, 15)
        for _, writer in conns:
            writer.close()

        async def healthy() -> bool:
            with contextlib.suppress(OSError):
                return (await api.call("GET", "/api/health", key=None, timeout=2)).status == 200
            return False

        await until(healthy, 15, interval=0.1)
        text = log_path.read_text()
        assert "Traceback" not in text and len(text) < 20_000, text[-2000:]
        assert text.count("cannot accept connections") <= 5
