"""Issue 4 end to end: files moving between clients and real kernels through the server, in
both sandbox modes. Small file limits keep the size and quota cases quick."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from tests.conftest import RunningServer, make_settings, running_server, sandbox_modes
from tests.polling import until

MB = 1 << 20
FILE_MAX, QUOTA = 2 * MB, 3 * MB


@pytest_asyncio.fixture(scope="module", params=sandbox_modes(), ids=lambda m: f"sandbox-{m}")
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("files-e2e"),
        sandbox=request.param,
        file_max_bytes=FILE_MAX,
        user_quota_bytes=QUOTA,
    )
    async with running_server(settings) as srv:
        yield srv


def files_url(user: str, name: str = "") -> str:
    return f"/api/sessions/{user}/files" + (f"/{name}" if name else "")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def multipart(files: dict[str, bytes], boundary: str = "e2eBoundary") -> tuple[dict, bytes]:
    body = b""
    for name, data in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        body += head.encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


async def put_chunked(server: RunningServer, path: str, data: bytes) -> HTTPResponse:
    """PUT `data` with chunked transfer encoding: no Content-Length to refuse up front."""

    async def produce(write: Callable) -> None:
        for i in range(0, len(data), 256 * 1024):
            await write(data[i : i + 256 * 1024])

    request = HTTPRequest(
        server.base + path,
        "PUT",
        headers=server.api.headers(),
        body_producer=produce,
        request_timeout=30,
    )
    return await AsyncHTTPClient().fetch(request, raise_error=False)


async def names(server: RunningServer, user: str, api: Any = None) -> list[str]:
    resp = await (api or server.api).call("GET", files_url(user))
    assert resp.status == 200, resp.body
    return [f["name"] for f in resp.json["files"]]


def host_entries(server: RunningServer, user: str) -> list[str]:
    """Everything in the user's work dir on the host, hidden and temp files included."""
    root = server.state.registry.work_dir_for("t1", user)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def host_passwd() -> bytes:
    return Path("/etc/passwd").read_bytes()


def error_of(resp: Any) -> tuple[int, str]:
    return resp.status, resp.json["error"]["code"]


async def test_uploaded_csv_is_read_by_pandas_and_load_file(server) -> None:
    csv = b"region,amount\nnorth,10\nsouth,32\n"
    put = await server.api.call("PUT", files_url("fe-csv", "sales.csv"), raw=csv)
    assert put.status == 201, put.body
    assert put.json["sha256"] == sha256(csv) and put.json["url"] == files_url("fe-csv", "sales.csv")
    code = (
        "import pandas as pd\ndf = pd.read_csv('sales.csv')\nlf = load_file('sales.csv')\n"
        "(int(df['amount'].sum()), lf.equals(df), list(df.columns))"
    )
    r = await server.api.execute("fe-csv", code)
    assert r["status"] == "ok", r["error"]
    assert r["result"] == {"text/plain": "(42, True, ['region', 'amount'])"}
    assert r["files"] == []  # reading changes nothing


async def test_multipart_upload_then_files_lists_them(server) -> None:
    headers, body = multipart({"notes.txt": b"alpha", "b.csv": b"x\n1\n"})
    resp = await server.api.call("POST", files_url("fe-multi"), raw=body, headers=headers)
    assert resp.status == 201, resp.body
    assert sorted(f["name"] for f in resp.json["files"]) == ["b.csv", "notes.txt"]
    r = await server.api.execute("fe-multi", "sorted(FILES), load_file('notes.txt')")
    assert r["result"] == {"text/plain": "(['b.csv', 'notes.txt'], 'alpha')"}, r


async def test_generated_chart_is_announced_and_downloads_byte_identical(server) -> None:
    user, url = "fe-plot", files_url("fe-plot", "chart.png")
    ws = await server.api.ws(user)
    code = (
        "import hashlib\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
        "plt.savefig('chart.png')\nplt.close()\n"
        "print(hashlib.sha256(open('chart.png', 'rb').read()).hexdigest())"
    )
    events = await ws.run(code, "plot-1")
    assert events[-1]["type"] == "done" and events[-1]["status"] == "ok", events
    files = [e for e in events if e["type"] == "file"]
    assert len(files) == 1, events
    event = files[0]
    assert (event["name"], event["event"], event["url"], event["id"]) == (
        "chart.png",
        "created",
        url,
        "plot-1",
    )
    kernel_sha = "".join(e["text"] for e in events if e["type"] == "stream").strip()
    download = await server.api.call("GET", url)
    assert download.status == 200 and download.headers["Content-Type"] == "image/png"
    assert sha256(download.body) == kernel_sha and len(download.body) == event["size"]

    code = code.replace("[1, 3, 2]", "[3, 1]")
    r = await server.api.execute(user, code)
    assert r["status"] == "ok", r["error"]
    assert r["files"] == [
        {"name": "chart.png", "size": r["files"][0]["size"], "event": "modified", "url": url}
    ]
    download = await server.api.call("GET", url)
    assert sha256(download.body) == r["stdout"].strip() != kernel_sha
    r = await server.api.execute(user, "open('table.csv', 'w').write('a\\n1\\n')")
    assert [(f["name"], f["event"], f["size"]) for f in r["files"]] == [("table.csv", "created", 4)]


async def test_uploading_over_a_file_the_kernel_reads_never_shows_half_a_file(server) -> None:
    user, size = "fe-race", 512 * 1024
    versions = [bytes([c]) * size for c in b"ab"]
    assert (await server.api.call("PUT", files_url(user, "big.bin"), raw=versions[0])).status == 201
    code = f"""
import json, time
reads, bad, seen = 0, [], set()
end = time.monotonic() + 3
while time.monotonic() < end:
    with open("big.bin", "rb") as f:
        data = f.read()
    reads += 1
    seen.add(data[:1])
    if len(data) != {size} or data.count(data[:1]) != {size}:
        bad.append(len(data))
print(json.dumps({{"reads": reads, "bad": bad[:5], "kinds": len(seen)}}))
"""
    reader = asyncio.create_task(server.api.execute(user, code))

    async def reading() -> bool:  # the execution has begun (the session may not exist yet)
        resp = await server.api.call("GET", f"/api/sessions/{user}")
        return resp.status == 200 and resp.json["state"] == "busy"

    await until(reading)
    uploads = 0
    while not reader.done() and uploads < 40:
        resp = await server.api.call("PUT", files_url(user, "big.bin"), raw=versions[uploads % 2])
        assert resp.status == 201, resp.body
        uploads += 1
    r = await reader
    assert r["status"] == "ok", r["error"]
    out = json.loads(r["stdout"])
    assert out["bad"] == [] and out["reads"] > 0, out
    assert uploads >= 2 and out["kinds"] >= 1, out  # best effort: both versions usually seen
    assert not [n for n in host_entries(server, user) if n.startswith(".kss-upload-")]


async def test_symlinks_and_fifos_the_code_makes_are_never_followed(server) -> None:
    user = "fe-link"
    passwd = host_passwd()
    code = (
        "import os\nos.symlink('/etc/passwd', 'link.txt')\nos.symlink('/etc', 'etcdir')\n"
        "os.mkfifo('pipe')\nopen('real.txt', 'w').write('real')"
    )
    r = await server.api.execute(user, code)
    assert r["status"] == "ok", r["error"]
    assert [f["name"] for f in r["files"]] == ["real.txt"]
    assert await names(server, user) == ["real.txt"]
    for name in ("link.txt", "etcdir/passwd", "pipe"):
        resp = await server.api.call("GET", files_url(user, name), timeout=10)
        assert resp.status in (400, 404) and resp.json["error"]["code"], (name, resp.body)
        assert b"root:" not in resp.body
    # Uploading over the link replaces the link; through the linked dir is refused.
    resp = await server.api.call("PUT", files_url(user, "link.txt"), raw=b"mine")
    assert resp.status == 201, resp.body
    resp = await server.api.call("PUT", files_url(user, "etcdir/evil"), raw=b"evil")
    assert error_of(resp) == (400, "bad_file_name")
    assert host_passwd() == passwd
    r = await server.api.execute(user, "open('link.txt').read(), os.path.islink('link.txt')")
    assert r["result"] == {"text/plain": "('mine', False)"}, r


async def test_other_tenants_and_users_files_are_unreachable(server) -> None:
    put = await server.api.call("PUT", files_url("fe-alice", "secret.txt"), raw=b"alice only")
    assert put.status == 201
    assert await names(server, "fe-alice", server.api2) == []  # same user name, tenant two
    resp = await server.api2.call("GET", files_url("fe-alice", "secret.txt"))
    assert error_of(resp) == (404, "file_not_found")
    for path in (
        files_url("fe-bob", "..%2Ffe-alice%2Fsecret.txt"),
        files_url("fe-bob", "%2E%2E/fe-alice/secret.txt"),
        files_url("fe-bob", "%2E%2E/%2E%2E/t1/fe-alice/secret.txt"),
        files_url("..%2Ffe-alice", "secret.txt"),
        files_url("fe-bob", "%2Fetc%2Fpasswd"),
        "/api/sessions/fe-bob/files//etc/passwd",
    ):
        for api in (server.api, server.api2):
            resp = await api.call("GET", path)
            assert resp.status in (400, 404) and resp.json["error"], (path, resp.body)
            assert b"alice only" not in resp.body and b"root:" not in resp.body
    r = await server.api2.execute("fe-alice", "import os\nos.listdir('.')")
    assert "secret.txt" not in r["result"]["text/plain"], r
    if server.settings.sandbox == "on":  # unsandboxed kernels can read the host: by design
        r = await server.api.execute("fe-bob", "open('../fe-alice/secret.txt').read()")
        assert r["status"] == "error" and r["error"]["ename"] == "FileNotFoundError", r


@pytest.mark.parametrize(
    "name",
    ["%2E%2E", ".hidden", "a/%2E%2E/b", "a%5Cb", "x%00y", "new%0Aline", "a//b", "x" * 300],
)
async def test_bad_names_are_400_with_json_errors(server, name: str) -> None:
    for method in ("PUT", "GET", "DELETE"):
        resp = await server.api.call(method, files_url("fe-names", name), raw=b"x")
        assert error_of(resp) == (400, "bad_file_name"), (method, name, resp.body)
        assert resp.json["error"]["message"]
    assert host_entries(server, "fe-names") == []


async def test_oversize_upload_is_413_and_leaves_nothing(server) -> None:
    user, big = "fe-big", b"x" * (FILE_MAX + 1)
    resp = await server.api.call("PUT", files_url(user, "big.bin"), raw=big)
    assert error_of(resp) == (413, "payload_too_large")  # refused from its Content-Length
    resp = await put_chunked(server, files_url(user, "chunked.bin"), big)
    assert resp.code == 413
    headers, body = multipart({"ok.txt": b"fine", "big.bin": big})
    resp = await server.api.call("POST", files_url(user), raw=body, headers=headers)
    assert resp.status == 413
    assert await names(server, user) == [] and host_entries(server, user) == []


async def test_quota_counts_what_the_kernel_wrote(server) -> None:
    user = "fe-quota"
    r = await server.api.execute(user, f"open('gen.bin', 'wb').write(b'g' * {FILE_MAX})")
    assert r["status"] == "ok", r["error"]
    resp = await server.api.call(
        "PUT", files_url(user, "more.bin"), raw=b"m" * (QUOTA - FILE_MAX + 1)
    )
    assert error_of(resp) == (413, "quota_exceeded")
    assert await names(server, user) == ["gen.bin"]
    resp = await server.api.call("PUT", files_url(user, "gen.bin"), raw=b"r" * FILE_MAX)
    assert resp.status == 201, resp.body  # replacing a file frees its bytes first
    assert host_entries(server, user) == ["gen.bin"]


async def test_a_tree_nested_thousands_deep_breaks_nothing(server) -> None:
    user = "fe-deep"
    code = (
        "import os\ntop = os.getcwd()\nfor _ in range(3000):\n    os.mkdir('d')\n"
        "    os.chdir('d')\nopen('leaf.txt', 'w').write('x')\nos.chdir(top)"
    )
    r = await server.api.execute(user, code)
    assert r["status"] == "ok", r["error"]
    try:
        restart = await server.api.call("POST", f"/api/sessions/{user}/restart")
        assert restart.status == 200, restart.body  # the new kernel's uid is given the tree
        assert (await server.api.execute(user, "'ok'"))["result"] == {"text/plain": "'ok'"}
        deep = "/".join(["x"] * 40)  # below the depth listings used to stop at
        put = await server.api.call("PUT", files_url(user, f"{deep}/a.bin"), raw=b"a" * FILE_MAX)
        assert put.status == 201 and deep + "/a.bin" in await names(server, user)
        put = await server.api.call("PUT", files_url(user, f"{deep}/b.bin"), raw=b"b" * FILE_MAX)
        assert error_of(put) == (413, "quota_exceeded")
        removed = await server.state.janitor.sweep(
            now=time.time() + server.settings.files.ttl_seconds
        )
        assert removed["files"] >= 1
    finally:
        unwind(server.state.registry.work_dir_for("t1", user))


def unwind(root: Path) -> None:
    """Remove the chain root/d/d/.../leaf.txt, too deep for shutil.rmtree (recursive)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fds = [os.open(root, flags)]
    try:
        with contextlib.suppress(FileNotFoundError):
            while True:
                fds.append(os.open("d", flags, dir_fd=fds[-1]))
        for name in os.listdir(fds[-1]) if len(fds) > 1 else []:
            os.unlink(name, dir_fd=fds[-1])
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


async def test_files_expire_through_the_janitor(server) -> None:
    user = "fe-expiry"
    assert (await server.api.call("PUT", files_url(user, "old.csv"), raw=b"a\n1\n")).status == 201
    r = await server.api.execute(user, "open('made.txt', 'w').write('kernel')")
    assert r["status"] == "ok", r["error"]
    ttl = server.settings.files.ttl_seconds
    removed = await server.state.janitor.sweep(now=time.time() + ttl + 10)
    assert removed["files"] >= 2
    for name in ("old.csv", "made.txt"):
        resp = await server.api.call("GET", files_url(user, name))
        assert error_of(resp) == (404, "file_expired"), resp.body
        assert "expired" in resp.json["error"]["message"]
    assert await names(server, user) == []
    resp = await server.api.call("PUT", files_url(user, "old.csv"), raw=b"fresh")
    assert resp.status == 201
    assert (await server.api.call("GET", files_url(user, "old.csv"))).body == b"fresh"


async def test_purge_removes_the_files(server) -> None:
    user = "fe-purge"
    assert (await server.api.call("PUT", files_url(user, "up.txt"), raw=b"up")).status == 201
    r = await server.api.execute(user, "open('made.txt', 'w').write('kernel')")
    assert r["status"] == "ok", r["error"]
    resp = await server.api.call("DELETE", f"/api/sessions/{user}?purge=true")
    assert resp.status == 200 and resp.json["purged"] is True, resp.body
    assert host_entries(server, user) == []
    assert not server.state.registry.work_dir_for("t1", user).exists()
    assert await names(server, user) == []
    resp = await server.api.call("GET", files_url(user, "up.txt"))
    assert error_of(resp) == (404, "file_not_found")
    assert await server.state.store.file_records("t1", user, ["up.txt", "made.txt"]) == {}


async def test_code_that_keeps_filling_the_disk_is_stopped(server: RunningServer) -> None:
    """Uploads are held to the quota as they stream; code is held to it while it runs."""
    user = "filler"
    fill = (
        "import time\ni = 0\nwhile True:\n"
        "    open(f'fill-{i}.bin', 'wb').write(b'x' * 500_000)\n    i += 1\n    time.sleep(0.05)"
    )
    r = await server.api.execute(user, fill, timeout=60)
    assert r["status"] == "error", r
    assert r["error"]["ename"] == "DiskQuotaExceeded", r["error"]
    assert f"over its quota of {QUOTA} bytes" in r["error"]["evalue"]
    # Over the quota but not writing: a long computation runs to its end.
    r = await server.api.execute(user, "import time; time.sleep(2.5); 'still here'")
    assert r["status"] == "ok" and r["result"]["text/plain"] == "'still here'", r
    # The code that frees space is never stopped, and the session goes on as before.
    code = "import glob, os\nfor f in glob.glob('fill-*'): os.remove(f)\n"
    code += "len(glob.glob('fill-*')), i > 0"
    r = await server.api.execute(user, code)
    assert r["status"] == "ok" and r["result"]["text/plain"] == "(0, True)", r
