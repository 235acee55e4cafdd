"""One user must never hurt another through the file area: each case of the hardening issue
reproduced through a real server with the sandbox on.

Heavy file work of one user (a work dir of 25,000 files) must not hold up anyone else;
every byte in a work dir counts toward the quota, uploads in flight too; a crash during an
upload leaves nothing the kernel can see; a purge works without a session and ends uploads
in flight cleanly; a download is always one complete version; setuid/setgid bits never
survive on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from tornado.httpclient import HTTPClientError

from files.paths import MAX_ENTRIES
from files.work_dirs import WorkDirs
from server.keys import server_secret
from tests.client import Api
from tests.conftest import (
    KEY,
    RunningServer,
    make_settings,
    require_sandbox,
    running_server,
    sandbox_only_module,
)
from tests.polling import until
from tests.server.server_process import start_server_process

MB = 1 << 20
QUOTA, FILE_MAX = 8 * MB, 4 * MB
# The module's server and the servers of the crash test get separate kernel uids.
UIDS = {"kernel_uid_first": 2_400_000, "kernel_uid_last": 2_400_049}
CRASH_UIDS = {"kernel_uid_first": 2_400_050, "kernel_uid_last": 2_400_099}
PROMPTLY = 30  # generous: what others wait for must complete, not be fast

UNAVAILABLE = sandbox_only_module()


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    require_sandbox(UNAVAILABLE)
    settings = make_settings(
        tmp_path_factory.mktemp("files-walls"),
        sandbox="on",
        user_quota_bytes=QUOTA,
        file_max_bytes=FILE_MAX,
        idle_timeout=10**9,  # sweeps with a clock days ahead expire files, not sessions
        **UIDS,
    )
    async with running_server(settings) as server:
        yield server


def files_url(user: str, name: str = "") -> str:
    return f"/api/sessions/{user}/files" + (f"/{name}" if name else "")


def work_dir(srv: RunningServer, user: str) -> Path:
    return srv.state.registry.work_dir_for("t1", user)


def staged(data_dir: Path, user: str) -> list[Path]:
    """Regular files of `user`'s uploads: in the staging dir (now) or the work dir (before)."""
    found = []
    work = WorkDirs(data_dir / "work", server_secret(data_dir)).path("t1", user)
    for top in (data_dir / "staging", work):
        if top.exists():
            found += [p for p in top.rglob("*") if p.is_file() and not p.is_symlink()]
    return found


async def within(awaitable: Awaitable[Any], what: str) -> Any:
    try:
        async with asyncio.timeout(PROMPTLY):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"{what} did not complete within {PROMPTLY} s")


class RawUpload:
    """A PUT whose body the test sends piece by piece, over a plain socket."""

    def __init__(self, base: str, user: str, name: str, size: int) -> None:
        self.port = int(base.rsplit(":", 1)[1])
        self.path = files_url(user, name)
        self.size = size
        self.sent = 0

    async def start(self, first: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"PUT {self.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Length: {self.size}\r\nConnection: close\r\n\r\n"
        )
        self.writer.write(head.encode())
        await self.send(first)

    async def send(self, n: int) -> None:
        self.writer.write(b"u" * n)
        await self.writer.drain()
        self.sent += n

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def answer(self, more: int) -> tuple[int, dict[str, Any]]:
        """Send `more` bytes of the body, then read the answer. (More than the server reads
        before it answers would make its close a reset, losing the answer.)"""
        await self.send(more)
        raw = await asyncio.wait_for(self.reader.read(), PROMPTLY)
        await self.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)


# -- 1. work proportional to one user's file count ----------------------------------------


def make_files(root: Path, count: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"f{i:05d}.txt").write_bytes(b"%d" % i)


async def all_pages(api: Api, user: str) -> tuple[list[str], bool]:
    names: list[str] = []
    truncated = False
    after = ""
    while True:
        query = f"?limit=5000&after={after}" if after else "?limit=5000"
        resp = await api.call("GET", files_url(user) + query, timeout=120)
        assert resp.status == 200, resp.body
        names += [f["name"] for f in resp.json["files"]]
        truncated = truncated or resp.json["truncated"]
        if resp.json["next"] is None:
            return names, truncated
        after = resp.json["next"]


@pytest.mark.timeout(300)
async def test_a_user_with_25000_files_holds_up_nobody(srv) -> None:
    heavy, other, newcomer = "fw-heavy", "fw-other", "fw-newcomer"
    assert (await srv.api.execute(other, "x = 41"))["status"] == "ok"
    await asyncio.to_thread(make_files, work_dir(srv, heavy), 25_000)

    listings = [
        asyncio.create_task(srv.api.call("GET", files_url(heavy), timeout=300)) for _ in range(6)
    ]
    try:
        await others_are_served(srv, other, newcomer)
        answers = await within(asyncio.gather(*listings), "six listings of 25,000 files")
    finally:
        for task in listings:
            task.cancel()
    for resp in answers:
        assert resp.status == 200, resp.body
        page = resp.json
        assert len(page["files"]) == 1000 and page["next"] == page["files"][-1]["name"]
    # The whole listing, page by page: a bounded walk, each name once, in order.
    names, truncated = await within(all_pages(srv.api, heavy), "a listing of 25,000 files")
    assert truncated and len(names) == MAX_ENTRIES == len(set(names))
    assert names == sorted(names)
    for query in ("?limit=0", "?limit=5001", "?limit=x", "?after=..%2Fx"):
        resp = await srv.api.call("GET", files_url(heavy) + query)
        assert resp.status == 400 and resp.json["error"]["code"], (query, resp.body)


async def others_are_served(srv: RunningServer, other: str, newcomer: str) -> None:
    """Another user's execution and upload, and a new user's session, all complete."""
    r = await within(srv.api.execute(other, "x + 1"), "another user's execution")
    assert r["status"] == "ok" and r["result"] == {"text/plain": "42"}, r
    up = await within(
        srv.api.call("PUT", files_url(other, "in.csv"), raw=b"a\n1\n"), "another user's upload"
    )
    assert up.status == 201, up.body
    new = await within(srv.api.call("PUT", f"/api/sessions/{newcomer}"), "a new session")
    assert new.status == 201, new.body
    r = await within(srv.api.execute(newcomer, "'hello'"), "the new session's execution")
    assert r["result"] == {"text/plain": "'hello'"}, r


@pytest.mark.timeout(300)
async def test_expiry_of_25000_files_runs_in_bounded_sweeps_beside_everyone(srv) -> None:
    heavy, other = "fw-expire-heavy", "fw-expire-other"
    await asyncio.to_thread(make_files, work_dir(srv, heavy), 25_000)
    assert (await srv.api.call("PUT", files_url(other, "a.csv"), raw=b"a")).status == 201
    later = time.time() + srv.settings.files.ttl_seconds + 60
    sweep = asyncio.create_task(srv.state.janitor.sweep(now=later))
    try:
        r = await within(srv.api.execute(other, "'still served'"), "an execution during a sweep")
        assert r["result"] == {"text/plain": "'still served'"}, r
        first = await within(sweep, "an expiry sweep of 25,000 files")
    finally:
        sweep.cancel()
    assert first["files"] >= MAX_ENTRIES and first["kernels"] == 0
    second = await within(srv.state.janitor.sweep(now=later), "a second sweep")
    assert second["files"] >= 25_000 - MAX_ENTRIES  # the rest, in the next sweep
    assert not [p for p in work_dir(srv, heavy).iterdir() if p.is_file()]
    listed = await srv.api.call("GET", files_url(heavy))
    assert listed.json["files"] == [], listed.body
    gone = await srv.api.call("GET", files_url(other, "a.csv"))
    assert gone.status == 404 and gone.json["error"]["code"] == "file_expired", gone.body


# -- 2. every byte in the work dir counts ------------------------------------------------


async def test_code_writing_hidden_or_temp_named_files_is_held_to_the_quota(srv) -> None:
    code = textwrap.dedent(
        """
        import time
        with open('.kss-upload-x', 'wb') as f:
            while True:
                f.write(b'x' * 256_000)
                f.flush()
                time.sleep(0.02)
        """
    )
    r = await srv.api.execute("fw-hidden", code, timeout=60)
    assert r["status"] == "error", r
    assert r["error"]["ename"] == "DiskQuotaExceeded", r["error"]
    assert f"over its quota of {QUOTA} bytes" in r["error"]["evalue"]


# -- 3. a crash during an upload ---------------------------------------------------------


@pytest.mark.timeout(240)
async def test_a_crash_mid_upload_leaves_nothing_visible_and_the_quota_exact(tmp_path) -> None:
    user, keep, quota = "fw-crash", 256 * 4096, 4 * MB
    args = ["--sandbox", "on", f"--user-quota-bytes={quota}", f"--file-max-bytes={quota}"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in CRASH_UIDS.items()]
    proc, api = await start_server_process(tmp_path, pool_size=1, args=args)
    try:
        put = await api.call("PUT", files_url(user, "keep.bin"), raw=b"k" * keep)
        assert put.status == 201, put.body
        upload = RawUpload(api.base, user, "partial.bin", quota - keep)
        await upload.start(MB)

        def partial() -> int:
            return sum(p.stat().st_size for p in staged(tmp_path, user) if p.name != "keep.bin")

        await until(lambda: partial() >= MB // 2, PROMPTLY)
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
        await upload.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    settings = make_settings(
        tmp_path, sandbox="on", user_quota_bytes=quota, file_max_bytes=quota, **CRASH_UIDS
    )
    async with running_server(settings) as srv:
        code = (
            "import os\nsorted((os.path.join(d, f), os.path.getsize(os.path.join(d, f)))\n"
            "       for d, _, fs in os.walk('.') for f in fs)"
        )
        r = await srv.api.execute(user, code)
        assert r["result"] == {"text/plain": f"[('./keep.bin', {keep})]"}, r
        assert [p.name for p in staged(tmp_path, user)] == ["keep.bin"]
        assert await srv.state.files.area("t1", user).ausage() == keep
        over = await srv.api.call("PUT", files_url(user, "rest.bin"), raw=b"r" * (quota - keep + 1))
        assert over.status == 413 and over.json["error"]["code"] == "quota_exceeded", over.body
        exact = await srv.api.call("PUT", files_url(user, "rest.bin"), raw=b"r" * (quota - keep))
        assert exact.status == 201, exact.body


# -- 4, 5. purges ------------------------------------------------------------------------


async def test_purge_of_a_user_with_files_and_no_session(srv) -> None:
    user = "fw-nosession"
    assert (await srv.api.call("PUT", files_url(user, "a.txt"), raw=b"a")).status == 201
    assert (await srv.api.call("GET", f"/api/sessions/{user}")).status == 404
    resp = await srv.api.call("DELETE", f"/api/sessions/{user}?purge=true")
    assert resp.status == 200 and resp.json["purged"] is True, resp.body
    assert not work_dir(srv, user).exists()
    assert await srv.state.store.file_records("t1", user, ["a.txt"]) == {}
    listed = await srv.api.call("GET", files_url(user))
    assert listed.status == 200 and listed.json["files"] == [], listed.body
    resp = await srv.api.call("DELETE", f"/api/sessions/{user}?purge=true")
    assert resp.status == 404 and resp.json["error"]["code"] == "session_not_found", resp.body


async def test_purge_during_an_upload_ends_it_cleanly(srv) -> None:
    user = "fw-purge-upload"
    assert (await srv.api.execute(user, "1"))["status"] == "ok"
    upload = RawUpload(srv.base, user, "big.bin", 3 * MB)
    await upload.start(MB)
    data = srv.settings.data_dir
    await until(lambda: sum(p.stat().st_size for p in staged(data, user)) == MB, PROMPTLY)
    resp = await srv.api.call("DELETE", f"/api/sessions/{user}?purge=true")
    assert resp.status == 200 and resp.json["purged"] is True, resp.body
    status, body = await upload.answer(1000)
    assert (status, body["error"]["code"]) == (409, "file_area_purged"), body
    assert not work_dir(srv, user).exists() and staged(data, user) == []
    assert await srv.state.store.file_records("t1", user, ["big.bin"]) == {}


# -- 6. downloads of a file the code keeps rewriting -------------------------------------

REWRITER = """
import threading, random, time
stop = threading.Event()

def version(i, big):
    return f"<{i}:{int(big)}>".encode() * ((200_000 if big else 50) + i % 97)

def rewrite(name, big):
    i = 0
    with open(name, "r+b") as f:
        while not stop.is_set():
            for _ in range(random.randint(1, 20)):
                i += 1
                f.seek(0)
                f.truncate()
                f.write(version(i, big))
                f.flush()
            time.sleep(random.random() * 0.15)

for name, big in (("small.txt", False), ("big.txt", True)):
    open(name, "wb").write(version(0, big))
    threading.Thread(target=rewrite, args=(name, big), daemon=True).start()
"""


def one_version(body: bytes) -> bool:
    """A state the writer left the file in: a whole version, or empty (truncated, the new
    version not written yet). Not a mix of two versions, not one cut short."""
    if body == b"":
        return True
    m = re.match(rb"<(\d+):([01])>", body)
    if not m:
        return False
    i, big = int(m[1]), m[2] == b"1"
    return body == m[0] * ((200_000 if big else 50) + i % 97)


async def test_a_download_is_always_one_complete_version(srv) -> None:
    user = "fw-race"
    r = await srv.api.execute(user, REWRITER)
    assert r["status"] == "ok", r
    try:
        served = {"small.txt": 0, "big.txt": 0}
        for attempt in range(80):
            name = "small.txt" if attempt % 2 else "big.txt"
            try:
                resp = await srv.api.call("GET", files_url(user, name))
            except HTTPClientError as exc:  # cut short: the body broke its Content-Length
                pytest.fail(f"download {attempt} of {name} broke off: {exc!r}")
            if resp.status == 409:
                assert resp.json["error"]["code"] == "file_busy", resp.body
                continue
            assert resp.status == 200, (resp.status, resp.body[:200])
            assert int(resp.headers["Content-Length"]) == len(resp.body)
            size = int(resp.headers["ETag"].strip('"').split("-")[1], 16)
            assert size == len(resp.body)
            assert one_version(resp.body), resp.body[:80]
            served[name] += len(resp.body) > 0
        assert all(served.values()), served  # the writer pauses: some downloads get through
    finally:
        await srv.api.execute(user, "stop.set()")


# -- 7. setuid / setgid ------------------------------------------------------------------


async def test_setuid_and_setgid_bits_never_survive_on_the_host(srv) -> None:
    user = "fw-setuid"
    code = textwrap.dedent(
        """
        import os
        open('tool', 'w').write('#!/bin/sh\\necho hi\\n')
        os.chmod('tool', 0o6755)
        open('.hidden-tool', 'w').write('x')
        os.chmod('.hidden-tool', 0o4755)
        os.mkdir('shared')
        os.chmod('shared', 0o2775)
        [oct(os.stat(p).st_mode & 0o7777) for p in ('tool', '.hidden-tool', 'shared')]
        """
    )
    r = await srv.api.execute(user, code)
    assert r["result"] == {"text/plain": "['0o6755', '0o4755', '0o2775']"}, r
    root = work_dir(srv, user)
    for name in ("tool", ".hidden-tool", "shared"):
        mode = os.lstat(root / name).st_mode
        assert not mode & (stat.S_ISUID | stat.S_ISGID), (name, oct(mode))
    assert os.lstat(root / "tool").st_mode & 0o777 == 0o755  # nothing else changed
    r = await srv.api.execute(user, "open('tool').read()")
    assert r["result"] == {"text/plain": "'#!/bin/sh\\necho hi\\n'"}, r
