"""What tornado answers on its own is a JSON error, and a client still sending reads it:
malformed HTTP from a plain socket, an oversized header block, urllib uploads over a limit."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from server.edge_stream import bounded
from tests.conftest import KEY, RunningServer, make_settings, running_server
from tests.polling import until

FILE_MAX = 1_000_000
AUTH = f"Authorization: Bearer {KEY}\r\n"


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("edge"), pool_size=0, file_max_bytes=FILE_MAX, max_code_bytes=10_000
    )
    async with running_server(settings) as server:
        yield server


def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def json_error(raw: bytes) -> tuple[int, str]:
    """(status, error code) of a raw response, checking it is complete JSON."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"].startswith("application/json"), headers
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["message"]
    return int(lines[0].split()[1]), error["code"]


async def send(srv: RunningServer, data: bytes) -> tuple[int, str]:
    return json_error(await asyncio.to_thread(exchange, srv.settings.port, data))


def post(path: str, headers: str, body: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{AUTH}{headers}\r\n"
    return head.encode("latin-1") + body  # as tornado decodes headers


NOTES = "/api/sessions/edge/notes"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nno colon here\r\n\r\n",
        post(NOTES, "Content-Length: -5\r\n"),
        post(NOTES, "Content-Length: 5\r\nContent-Length: 6\r\n", b"12345"),
        post(NOTES, "Content-Length: \u00b2\r\n"),  # '²'.isdigit(), int('²') fails
        post(NOTES, "Content-Length: 99999999999999999999999\r\n"),
        post(NOTES, "Transfer-Encoding: chunked\r\n", b"zz\r\n"),
        post(NOTES, "Transfer-Encoding: chunked\r\n", b"1" * 100 + b"\r\n"),
        post(NOTES, "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"12345"),
        post(NOTES, "Transfer-Encoding: gzip\r\n", b"12345"),
    ],
    ids=[
        "request-line",
        "header-line",
        "negative-length",
        "two-lengths",
        "superscript-length",
        "huge-length",
        "chunk-size",
        "chunk-size-line-too-long",
        "chunked-and-length",
        "unknown-transfer-encoding",
    ],
)
async def test_malformed_http_is_a_json_400(srv: RunningServer, request_bytes: bytes) -> None:
    assert await send(srv, request_bytes) == (400, "bad_request")
    assert srv.state.registry.find("t1", "edge") is None  # nothing reached a handler method


@pytest.mark.parametrize("where", ["header", "request-line"])
async def test_a_header_block_over_64k_is_a_json_431(srv: RunningServer, where: str) -> None:
    big = "x" * 70_000
    if where == "header":
        data = f"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
    else:
        data = f"GET /api/health?{big} HTTP/1.1\r\nHost: x\r\n\r\n"
    assert await send(srv, data.encode()) == (431, "headers_too_large")
    resp = await srv.api.call("GET", "/api/health", key=None)
    assert resp.status == 200


def urllib_send(url: str, method: str, body: bytes, content_type: str) -> tuple[int, Any]:
    """urllib sends the whole body before reading any answer (no `Expect: 100-continue`)."""
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, {**json.loads(resp.read()), "headers": dict(resp.headers)}
    except urllib.error.HTTPError as exc:
        return exc.code, {**json.loads(exc.read()), "headers": dict(exc.headers)}


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/sessions/uploader/files/big.bin", "payload_too_large"),
        ("/api/sessions/uploader/execute", "payload_too_large"),
    ],
)
async def test_urllib_reads_the_413_of_an_oversized_body(
    srv: RunningServer, path: str, code: str
) -> None:
    body = b"x" * (20 * FILE_MAX)  # far more than socket buffers hold: a reset would show
    method = "PUT" if "/files/" in path else "POST"
    status, answer = await asyncio.to_thread(
        urllib_send, srv.base + path, method, body, "application/octet-stream"
    )
    assert (status, answer["error"]["code"]) == (413, code)
    assert answer["headers"].get("Connection") == "close"
    work_dir = srv.state.registry.work_dir_for("t1", "uploader")
    assert not work_dir.exists() or not any(work_dir.iterdir())
    assert srv.state.registry.find("t1", "uploader") is None


async def test_lingering_closes_end_and_release_their_connections(srv: RunningServer) -> None:
    await send(srv, b"NONSENSE\r\n\r\n")
    await until(lambda: srv.http.open_connections("127.0.0.1") == 0)


def test_the_bounded_header_pattern_ends_where_tornados_does() -> None:
    pattern = bounded(rb"\r?\n\r?\n", 10)
    assert pattern.search(b"GET /\r\n\r\nrest").group() == b"GET /\r\n\r\n"
    assert pattern.search(b"GET /\n\nrest").group() == b"GET /\n\n"
    assert pattern.search(b"GET /a/b/c/d/e/f").group() == b"GET /a/b/c/"  # 11 bytes: over
    assert pattern.search(b"GET /a") is None  # not yet: wait for more
