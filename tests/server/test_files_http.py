"""The file routes over real HTTP: a tornado server on a free port running the real
`ApiHandler` base and `server.files_http` handlers. No kernel is needed to move files, so
the app state is reduced to what these handlers use (settings, auth, work dir mapping);
kernel-side behaviour (upload then analyse, generated chart) is in tests/kernels."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.testing import bind_unused_port

from files.area import FileLimits
from files.areas import FileAreas
from files.pool import FairPool
from files.work_dirs import WorkDirs
from server.api import NotFoundHandler
from server.app import pattern
from server.auth import Authenticator
from server.files_http import FILE_ROUTES, content_disposition
from server.origins import Origins
from transcript.store.sqlite import SqliteStore

KEY, OTHER_KEY = "key-tenant-acme", "key-tenant-other"
MB = 1024 * 1024


@dataclass
class Server:
    url: str
    port: int
    root: Path
    settings: SimpleNamespace
    client: AsyncHTTPClient
    files: FileAreas

    def work_dir(self, user: str, tenant: str = "acme") -> Path:
        return self.files.work_dir(tenant, user)

    async def call(
        self, method: str, path: str, body: bytes | None = None, key: str | None = KEY, **kw: Any
    ) -> HTTPResponse:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kw.pop("headers", {}))
        if body is None and method in ("PUT", "POST") and "body_producer" not in kw:
            body = b""
        request = HTTPRequest(
            self.url + path, method, headers=headers, body=body, request_timeout=60, **kw
        )
        return await self.client.fetch(request, raise_error=False)


def error_of(resp: HTTPResponse) -> tuple[int, str]:
    return resp.code, json.loads(resp.body)["error"]["code"]


@pytest_asyncio.fixture
async def srv(tmp_path: Path) -> AsyncIterator[Server]:
    limits = FileLimits(max_file_bytes=2 * MB, quota=5 * MB)
    settings = SimpleNamespace(
        data_dir=tmp_path, max_request_bytes=100_000, files=limits, body_idle_timeout=60
    )
    store = SqliteStore(tmp_path / "db" / "kss.sqlite3")
    await store.open()
    pool = FairPool(2)
    files = FileAreas(
        WorkDirs(tmp_path / "files", b"test secret"), tmp_path / "staging", store, pool, limits
    )
    files.reset_staging()
    state = SimpleNamespace(
        settings=settings,
        auth=Authenticator((("acme", KEY), ("other", OTHER_KEY)), b"test secret"),
        files=files,
        origins=Origins(),
        replicas=None,  # one server: nothing is forwarded
    )
    kw = {"state": state}
    app = tornado.web.Application(
        [(pattern(t), handler, kw) for t, handler in FILE_ROUTES],
        default_handler_class=NotFoundHandler,
        default_handler_args=kw,
    )
    http = HTTPServer(app, max_body_size=settings.max_request_bytes * 2)
    sock, port = bind_unused_port()
    http.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True, max_body_size=200 * MB)
    try:
        yield Server(f"http://127.0.0.1:{port}", port, tmp_path, settings, client, files)
    finally:
        client.close()
        http.stop()
        await http.close_all_connections()
        await pool.close()
        await store.close()


def multipart(files: dict[str, bytes], boundary: str = "kssTestBoundary") -> tuple[dict, bytes]:
    body = b""
    for name, data in files.items():
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body += f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n'.encode()
    body += f"--{boundary}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


def producer(data: bytes, chunk: int = 64 * 1024) -> Callable:
    async def produce(write: Callable) -> None:
        for i in range(0, len(data), chunk):
            await write(data[i : i + chunk])

    return produce


def leftovers(srv: Server, user: str = "alice") -> list[str]:
    root = srv.work_dir(user)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


async def refused_while_sending(stream: IOStream, srv: Server) -> None:
    """Send 64 KiB chunks of a body until the server answers: it must have said 413
    `file_too_large` before 10 MB went, and left nothing behind."""
    chunk = b"x" * 65536
    sent = 0
    try:
        while sent < 10 * MB:
            await stream.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
    except Exception:
        pass  # the server closed the connection after answering
    response = await stream.read_until_close()
    stream.close()
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"file_too_large"' in response
    assert sent < 10 * MB
    assert leftovers(srv) == []


async def test_put_list_download_delete(srv: Server) -> None:
    data = b"region,amount\nnorth,10\nsouth,20\n"
    resp = await srv.call("PUT", "/api/sessions/alice/files/sales.csv", data)
    assert resp.code == 201
    info = json.loads(resp.body)
    assert info["origin"] == "upload" and info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["url"] == "/api/sessions/alice/files/sales.csv"
    listed = json.loads((await srv.call("GET", "/api/sessions/alice/files")).body)["files"]
    assert [(f["name"], f["size"], f["origin"]) for f in listed] == [
        ("sales.csv", len(data), "upload")
    ]
    assert set(listed[0]) == {"name", "size", "modified", "expires_at", "origin", "sha256", "url"}
    resp = await srv.call("GET", info["url"])
    assert resp.code == 200 and resp.body == data
    assert resp.headers["Content-Type"] == "text/csv"
    assert resp.headers["Content-Disposition"] == content_disposition("sales.csv")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["ETag"] and resp.headers["Last-Modified"]
    resp = await srv.call("DELETE", info["url"])
    assert resp.code == 200
    assert error_of(await srv.call("GET", info["url"])) == (404, "file_not_found")
    assert error_of(await srv.call("DELETE", info["url"])) == (404, "file_not_found")


async def test_replace_unicode_and_nested_names(srv: Server) -> None:
    for name in ("données 2024.csv", "日本語/表.txt", "reports/q1/summary.txt"):
        url = f"/api/sessions/alice/files/{quote(name)}"
        assert (await srv.call("PUT", url, b"v1")).code == 201
        assert (await srv.call("PUT", url, b"version 2")).code == 201
        resp = await srv.call("GET", url)
        assert resp.body == b"version 2"
        assert quote(name.rsplit("/", 1)[-1]) in resp.headers["Content-Disposition"]
    assert "données 2024.csv" in leftovers(srv)


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "..%2F..%2Facme%2Fbob%2Fsecret.csv",
        "%2e%2e/secret.csv",
        "%2Fetc%2Fpasswd",
        "a%00b",
        "a%0Ab",
        "a%1Bb",
        "x" * 256,
        ".hidden",
        "a//b",
        "%FF%FE",
    ],
)
async def test_bad_names_are_400(srv: Server, name: str) -> None:
    for method in ("PUT", "GET", "DELETE"):
        body = b"x" if method == "PUT" else None
        resp = await srv.call(method, f"/api/sessions/alice/files/{name}", body)
        assert resp.code == 400, (method, name, resp.body)
    assert leftovers(srv) == []


async def test_symlinks_pointing_outside_are_refused(srv: Server, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    work = srv.work_dir("alice")
    work.mkdir(parents=True)
    os.symlink(secret, work / "escape.txt")
    os.symlink(tmp_path, work / "hostdir")
    for name in ("escape.txt", "hostdir/secret.txt"):
        resp = await srv.call("GET", f"/api/sessions/alice/files/{name}")
        assert error_of(resp) == (400, "bad_file_name")
        assert b"host secret" not in resp.body
    assert error_of(await srv.call("PUT", "/api/sessions/alice/files/hostdir/x", b"x")) == (
        400,
        "bad_file_name",
    )
    assert sorted(os.listdir(tmp_path)) == ["db", "files", "secret.txt", "staging"]


async def test_oversize_with_length_is_413_before_the_body(srv: Server) -> None:
    data = b"x" * (2 * MB + 1)
    resp = await srv.call("PUT", "/api/sessions/alice/files/big.bin", data)
    assert error_of(resp) == (413, "payload_too_large")
    assert leftovers(srv) == []


async def test_oversize_chunked_upload_stops_at_the_limit(srv: Server) -> None:
    # No Content-Length: the limit is found while streaming, and the answer comes at once.
    stream = IOStream(__import__("socket").create_connection(("127.0.0.1", srv.port)))
    head = (
        "PUT /api/sessions/alice/files/big.bin HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    await stream.write(head.encode())
    await refused_while_sending(stream, srv)


async def test_quota_is_per_user_and_leaves_nothing(srv: Server) -> None:
    two = os.urandom(2 * MB)
    for i in range(2):
        assert (await srv.call("PUT", f"/api/sessions/alice/files/{i}.bin", two)).code == 201
    resp = await srv.call("PUT", "/api/sessions/alice/files/2.bin", two)
    assert error_of(resp) == (413, "quota_exceeded")
    resp = await srv.call(
        "PUT", "/api/sessions/alice/files/2.bin", body_producer=producer(two)
    )  # streamed, no length: refused as it crosses the quota
    assert error_of(resp) == (413, "quota_exceeded")
    assert leftovers(srv) == ["0.bin", "1.bin"]
    assert (await srv.call("PUT", "/api/sessions/bob/files/2.bin", two)).code == 201


async def test_multipart_upload_of_several_files(srv: Server) -> None:
    files = {"a.csv": b"x,y\n1,2\n", "chart.png": os.urandom(300_000), "sub/notes.txt": b"n"}
    headers, body = multipart(files)
    resp = await srv.call("POST", "/api/sessions/alice/files", body, headers=headers)
    assert resp.code == 201, resp.body
    assert [f["name"] for f in json.loads(resp.body)["files"]] == list(files)
    for name, data in files.items():
        assert (await srv.call("GET", f"/api/sessions/alice/files/{name}")).body == data


async def test_multipart_is_all_or_nothing(srv: Server) -> None:
    headers, body = multipart({"ok.csv": b"fine", "big.bin": b"x" * (2 * MB + 1)})
    resp = await srv.call(
        "POST", "/api/sessions/alice/files", headers=headers, body_producer=producer(body)
    )
    assert error_of(resp) == (413, "file_too_large")
    headers, body = multipart({"ok.csv": b"fine", "../evil": b"x"})
    resp = await srv.call("POST", "/api/sessions/alice/files", body, headers=headers)
    assert error_of(resp) == (400, "bad_file_name")
    headers, body = multipart({"ok.csv": b"1", "ok.csv ": b"2"})
    resp = await srv.call("POST", "/api/sessions/alice/files", body[:-20], headers=headers)
    assert error_of(resp) == (400, "bad_multipart")
    resp = await srv.call("POST", "/api/sessions/alice/files", b"{}")
    assert error_of(resp) == (400, "bad_multipart")
    assert leftovers(srv) == []


async def test_other_tenants_and_users_cannot_reach_files(srv: Server) -> None:
    await srv.call("PUT", "/api/sessions/alice/files/secret.csv", b"acme alice")
    url = "/api/sessions/alice/files/secret.csv"
    assert error_of(await srv.call("GET", url, key=OTHER_KEY)) == (404, "file_not_found")
    assert (
        json.loads((await srv.call("GET", "/api/sessions/alice/files", key=OTHER_KEY)).body)[
            "files"
        ]
        == []
    )
    assert error_of(await srv.call("GET", url, key=None))[0] == 401
    assert error_of(await srv.call("GET", url, key="wrong-key-123"))[0] == 401
    for path in (
        "/api/sessions/bob/files/..%2Falice%2Fsecret.csv",
        "/api/sessions/..%2Fother%2Falice/files/secret.csv",
        "/api/sessions/bob/files/%2E%2E/%2E%2E/acme/alice/secret.csv",
    ):
        resp = await srv.call("GET", path)
        assert resp.code in (400, 404) and b"acme alice" not in resp.body
    assert (await srv.call("GET", url)).body == b"acme alice"


async def test_expired_download_is_404_naming_expiry(srv: Server) -> None:
    await srv.call("PUT", "/api/sessions/alice/files/old.csv", b"1")
    old = srv.work_dir("alice") / "old.csv"
    past = old.stat().st_mtime - 49 * 3600
    os.utime(old, (past, past))
    resp = await srv.call("GET", "/api/sessions/alice/files/old.csv")
    assert error_of(resp) == (404, "file_expired")
    assert "expired" in json.loads(resp.body)["error"]["message"]


def write_random_file(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MB):
            block = os.urandom(MB)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


async def test_100_mb_download_keeps_memory_flat(srv: Server) -> None:
    size = 100 * MB
    expected = write_random_file(srv.work_dir("alice") / "big.bin", size)
    digest = hashlib.sha256()
    received = 0

    def consume(chunk: bytes) -> None:
        nonlocal received
        received += len(chunk)
        digest.update(chunk)

    tracemalloc.start()
    try:
        resp = await srv.call(
            "GET", "/api/sessions/alice/files/big.bin", streaming_callback=consume
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.code == 200 and received == size
    assert digest.hexdigest() == expected
    assert peak < 8 * MB, f"peak traced memory {peak / MB:.1f} MB while streaming 100 MB"


async def test_listing_is_paginated_by_name(srv: Server) -> None:
    work = srv.work_dir("alice")
    work.mkdir(parents=True)
    for i in range(7):
        (work / f"{i}.txt").write_bytes(b"x")
    pages, after = [], ""
    while True:
        resp = await srv.call("GET", "/api/sessions/alice/files?limit=3" + after)
        assert resp.code == 200, resp.body
        page = json.loads(resp.body)
        pages.append([f["name"] for f in page["files"]])
        assert page["truncated"] is False
        if page["next"] is None:
            break
        after = f"&after={quote(page['next'])}"
    assert pages == [["0.txt", "1.txt", "2.txt"], ["3.txt", "4.txt", "5.txt"], ["6.txt"]]
    for query in ("limit=0", "limit=5001", "limit=-1", "limit=abc", "after=..", "after=%2Fetc"):
        resp = await srv.call("GET", f"/api/sessions/alice/files?{query}")
        assert error_of(resp) == (400, "invalid_field"), query
