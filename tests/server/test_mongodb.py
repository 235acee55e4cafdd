"""The server on the MongoDB store (`--mongodb-uri`), against a real wire-protocol server of
its own that the tests stop and start: it refuses to start without MongoDB (one line, the
password masked), keeps executing while MongoDB is gone, reports the store degraded, and
loses nothing once it is back; a buffer that overflows says so."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import KEY, RunningServer, free_port, make_settings, running_server
from tests.mongo import WireServer, database_name
from tests.polling import until


@pytest.fixture
async def wire(tmp_path: Path) -> AsyncIterator[WireServer]:
    server = WireServer(tmp_path / "mongo", free_port())
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def srv(tmp_path: Path, wire: WireServer) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        tmp_path / "data", mongodb_uri=wire.uri, mongodb_db=database_name(), pool_size=1
    )
    async with running_server(settings) as srv:
        yield srv
        srv.api.close_sockets()


async def health(srv: RunningServer) -> dict:
    return (await srv.api.call("GET", "/api/health", key=None)).json


async def test_without_mongodb_the_server_exits_with_one_line_naming_the_uri(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    argv = [sys.executable, "-m", "server", "--no-sandbox", "--port", str(free_port())]
    argv += ["--data-dir", str(tmp_path), "--api-key", f"t1={KEY}"]
    argv += ["--mongodb-uri", f"mongodb://kss:hunter2secret@127.0.0.1:{port}/"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        await until(lambda: proc.poll() is not None, timeout=30)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if "MongoDB" in line]
    assert lines == [
        f"cannot start: MongoDB at mongodb://kss:***@127.0.0.1:{port}/ is unusable "
        "(no server answered within 3 s)"
    ]
    assert "hunter2secret" not in out + err and "Traceback" not in err


async def test_the_status_names_the_store(srv: RunningServer) -> None:
    status = (await srv.api.call("GET", "/api/status")).json
    assert status["store"] == {
        "backend": "mongodb",
        "sessions": 0,
        "cells": 0,
        "state": "ok",
        "held": 0,
        "dropped": 0,
    }
    assert await health(srv) == {"status": "ok"}


CODE = "import time\nfor i in range(40):\n    print(i, flush=True)\n    time.sleep(0.05)\n'end'"


async def test_mongodb_restarting_mid_stream_loses_nothing(
    srv: RunningServer, wire: WireServer
) -> None:
    api = srv.api
    await api.execute("carol", "x = 1")
    ws = await api.ws("carol")
    await ws.send({"type": "execute", "id": "e1", "code": CODE})
    seen = await ws.until(lambda e: e["type"] == "stream")
    wire.stop()
    degraded = await until(lambda: _degraded(srv))
    assert degraded["store"]["backend"] == "mongodb" and degraded["store"]["held"] >= 0
    status = (await api.call("GET", "/api/status")).json
    assert status["store"]["state"] == "degraded" and "sessions" not in status["store"]
    notebook = await api.call("GET", "/api/sessions/carol/notebook")
    assert notebook.status == 503 and notebook.json["error"]["code"] == "store_unavailable"
    seen += await ws.until(lambda e: e["type"] == "stream" and e["text"].startswith("20"))
    await wire.start()
    seen += await ws.until(lambda e: e["type"] == "done")
    assert seen[-1]["status"] == "ok"  # the execution never noticed
    await until(lambda: _healthy(srv), timeout=30)

    nb = json.loads((await api.call("GET", "/api/sessions/carol/notebook")).body)
    cell = nb["cells"][-1]
    printed = "".join(e["text"] for e in seen if e["type"] == "stream")
    assert printed == "".join(f"{i}\n" for i in range(40))
    assert "".join(o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream") == (
        printed
    )
    assert cell["outputs"][-1]["data"]["text/plain"] == "'end'"
    stored = await srv.state.store.events_between("t1", "carol", seen[0]["seq"] - 1, 2**62)
    assert [json.loads(body) for _, body in stored] == [e for e in seen if "seq" in e]
    status = (await api.call("GET", "/api/status")).json
    assert status["store"]["state"] == "ok" and status["store"]["dropped"] == 0


async def test_a_buffer_that_overflows_is_reported(
    tmp_path: Path, wire: WireServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        tmp_path / "data", mongodb_uri=wire.uri, mongodb_db=database_name(), transcript_buffer=20
    )
    async with running_server(settings) as srv:
        await srv.api.execute("dave", "1")
        wire.stop()
        loud = "import time\nfor i in range(60):\n    print(i, flush=True)\n    time.sleep(0.01)"
        result = await srv.api.execute("dave", loud)
        assert result["status"] == "ok" and result["stdout"].count("\n") == 60
        report = await until(lambda: _degraded(srv))
        assert report["store"]["dropped"] > 0
        status = (await srv.api.call("GET", "/api/status")).json
        assert status["store"]["dropped"] == report["store"]["dropped"]
        assert "buffer of 20 items full" in caplog.text
        await wire.start()
        await until(lambda: _healthy(srv), timeout=30)
        assert (await health(srv)) == {"status": "ok"}  # the count stays in the status
        status = (await srv.api.call("GET", "/api/status")).json
        assert status["store"]["dropped"] == report["store"]["dropped"]


async def _degraded(srv: RunningServer) -> dict | None:
    report = await health(srv)
    return report if report["status"] == "degraded" else None


async def _healthy(srv: RunningServer) -> bool:
    return (await health(srv))["status"] == "ok"
