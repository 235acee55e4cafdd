"""Hibernation through the server: an idle session's variables outlive its kernel (culling, a
graceful shutdown, a server restart) and come back at the next execution; the snapshot is
the user's, hidden, counted, dropped when the user asks for a clean state, and it never
blocks the session when it cannot be restored."""

from __future__ import annotations

import ast
import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nbformat
import pytest
import pytest_asyncio

from files.area import HIBERNATION_DIR
from tests.conftest import RunningServer, make_settings, running_server, sandbox_modes
from tests.server.server_process import start_server_process

SANDBOX_UIDS = ("--kernel-uid-first", "2900000", "--kernel-uid-last", "2900049")
UIDS = {"kernel_uid_first": 2_900_050, "kernel_uid_last": 2_900_099}

STATE = """
import pandas as pd
from sklearn.linear_model import LinearRegression
df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [2.0, 4.0, 6.0, 8.0]})
model = LinearRegression().fit(df[["x"]], df["y"])
def double_total(column):
    return float(2 * df[column].sum())
handle = open("notes.txt", "w")
"""
CHECK = (
    "(len(df), round(float(model.predict(pd.DataFrame({'x': [10.0]}))[0]), 3), double_total('x'))"
)


def snapshot_dir(srv: RunningServer, user: str) -> Path:
    return srv.state.files.work_dir("t1", user) / HIBERNATION_DIR


async def stop_gracefully(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 60) == 0


@pytest.mark.parametrize("sandbox", sandbox_modes())
async def test_variables_outlive_a_server_restart(tmp_path: Path, sandbox: str):
    args = ("--no-sandbox",) if sandbox == "off" else SANDBOX_UIDS
    proc, api = await start_server_process(tmp_path / "d", pool_size=1, args=args)
    try:
        first = await api.execute("ana", STATE)
        assert first["status"] == "ok", first["error"]
        await stop_gracefully(proc)  # the shutdown hibernates the idle session
        proc, api = await start_server_process(tmp_path / "d", pool_size=1, args=args)
        ws = await api.ws("ana")
        events = await ws.run(CHECK, "after")
        ws.close()
        [restored] = [e for e in events if e["type"] == "restored"]
        assert restored["id"] == "after"
        assert {"df", "model", "double_total", "pd", "LinearRegression"} <= set(
            restored["restored"]
        )
        assert restored["lost"] == [{"name": "handle", "why": "open file"}]
        [result] = [e for e in events if e["type"] == "result"]
        assert result["data"]["text/plain"] == "(4, 20.0, 20.0)"
        # Restored once: the next execution is an ordinary one.
        again = await api.execute("ana", "handle")
        assert again["status"] == "error" and "restored" not in again
        assert again["error"]["ename"] == "NameError"
        resp = await api.call("GET", "/api/sessions/ana/notebook")
        nb = nbformat.reads(resp.body.decode(), as_version=4)
        nbformat.validate(nb)
        markers = [c.source for c in nb.cells if c.cell_type == "markdown"]
        assert any(
            "restored from hibernation" in m and "`handle` (open file)" in m for m in markers
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest_asyncio.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    settings = make_settings(tmp_path_factory.mktemp("data"), hibernate_timeout=5)
    async with running_server(settings) as srv:
        yield srv


async def cull(srv: RunningServer) -> None:
    """What the janitor does to sessions idle for longer than `--idle-timeout`."""
    await srv.state.registry.cull_idle(srv.settings.idle_timeout, time.time() + 3600)


async def test_culling_hibernates_and_the_next_execution_restores(server: RunningServer):
    api = server.api
    assert (await api.execute("cul", "import math\nx = [1, 2, 3]\ng = (i for i in x)"))[
        "status"
    ] == "ok"
    await cull(server)
    assert server.state.registry.find("t1", "cul") is None
    assert (snapshot_dir(server, "cul") / "manifest.json").is_file()
    # Hidden: not in the listing, and counted in the quota like every byte of the work dir.
    listing = (await api.call("GET", "/api/sessions/cul/files")).json
    assert listing["files"] == []
    area = server.state.files.area("t1", "cul")
    assert await area.ausage() > 0
    answer = await api.execute("cul", "print(sum(x), math.pi > 3, FILES)")
    assert answer["status"] == "ok"
    assert answer["kernel_restarted"] is True
    assert set(answer["restored"]) == {"math", "x"}
    assert answer["lost"] == [{"name": "g", "why": "generator"}]
    assert answer["stdout"].startswith("6 True FILES: no files")
    assert not snapshot_dir(server, "cul").exists()  # a later kernel change restores nothing


async def test_the_save_leaves_no_name_behind_and_a_fresh_kernel_does_not_overwrite(
    server: RunningServer,
):
    api = server.api
    await api.execute("quiet", "a = 1")
    await cull(server)
    # A session that runs nothing keeps the snapshot for the one that does.
    assert (await api.call("PUT", "/api/sessions/quiet")).status == 201
    await cull(server)
    names = "sorted(n for n in globals() if not n.startswith('_'))"
    answer = await api.execute("quiet", names)
    assert answer["restored"] == ["a"]
    seen = ast.literal_eval(answer["result"]["text/plain"])
    user_names = set(seen) - {"In", "Out", "exit", "quit", "get_ipython", "open"}
    assert user_names == {"a", "FILES", "load_file"}


async def test_delete_and_restart_drop_hibernated_variables(server: RunningServer):
    api = server.api
    await api.execute("del", "kept = 1")
    await cull(server)
    assert (await api.call("DELETE", "/api/sessions/del")).status == 200
    assert not snapshot_dir(server, "del").exists()
    answer = await api.execute("del", "kept")
    assert answer["error"]["ename"] == "NameError" and "restored" not in answer
    await api.execute("del", "kept = 2")
    await cull(server)
    assert (await api.call("PUT", "/api/sessions/del")).status == 201
    assert (await api.call("POST", "/api/sessions/del/restart")).status == 200
    assert not snapshot_dir(server, "del").exists()
    assert (await api.execute("del", "kept"))["error"]["ename"] == "NameError"


async def test_a_restore_that_fails_leaves_a_clean_kernel_and_runs_the_code(
    server: RunningServer,
):
    api = server.api
    slow = (
        "import time\n"
        "class Slow:\n"
        "    def __init__(self):\n"
        "        self.v = 1\n"
        "    def __setstate__(self, state):\n"
        "        time.sleep(60)\n"
        "s = Slow()\n"
        "n = 5"
    )
    await api.execute("slow", slow)
    await cull(server)
    started = time.monotonic()
    answer = await api.execute("slow", "'runs anyway'")
    assert time.monotonic() - started < 20  # the restore's time cap, not the sleep
    assert answer["status"] == "ok" and answer["result"]["text/plain"] == "'runs anyway'"
    assert answer["restored"] == []
    assert {x["name"] for x in answer["lost"]} == {"time", "Slow", "s", "n"}
    assert all("the restore failed" in x["why"] for x in answer["lost"])
    assert (await api.execute("slow", "n"))["error"]["ename"] == "NameError"
    assert not snapshot_dir(server, "slow").exists()
    # A snapshot that cannot be read at all fails the same way.
    await api.execute("slow", "m = 1")
    await cull(server)
    (snapshot_dir(server, "slow") / "manifest.json").write_text("{not json")
    answer = await api.execute("slow", "1")
    assert answer["status"] == "ok" and answer["lost"][0]["name"] == "*"


async def test_the_size_cap_loses_only_what_does_not_fit(tmp_path: Path):
    settings = make_settings(tmp_path, pool_size=0, hibernate_max_bytes=100_000)
    async with running_server(settings) as srv:
        await srv.api.execute("big", "small = list(range(10))\nbig = bytes(1_000_000)")
        await cull(srv)
        answer = await srv.api.execute("big", "small[-1]")
        assert answer["result"] == {"text/plain": "9"}
        assert answer["restored"] == ["small"]
        assert answer["lost"] == [{"name": "big", "why": "too large"}]


async def test_hibernate_off_keeps_todays_behaviour(tmp_path: Path):
    settings = make_settings(tmp_path, pool_size=0, hibernate=False)
    async with running_server(settings) as srv:
        await srv.api.execute("off", "v = 1")
        await cull(srv)
        assert not snapshot_dir(srv, "off").exists()
        answer = await srv.api.execute("off", "v")
        assert answer["error"]["ename"] == "NameError" and "restored" not in answer


async def test_snapshots_expire_with_the_transcript_not_with_the_files(tmp_path: Path):
    settings = make_settings(tmp_path, pool_size=0, file_ttl_seconds=10, transcript_ttl_seconds=100)
    async with running_server(settings) as srv:
        await srv.api.execute("exp", "v = 1")
        await cull(srv)
        manifest = snapshot_dir(srv, "exp") / "manifest.json"
        await srv.state.janitor.sweep(now=time.time() + 50)  # files expire, the snapshot stays
        assert manifest.is_file()
        await srv.state.janitor.sweep(now=time.time() + 200)  # the transcript expires
        assert not snapshot_dir(srv, "exp").exists()
        assert json.loads((await srv.api.call("GET", "/api/sessions/exp")).body)["error"]
