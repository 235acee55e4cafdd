"""SIGTERM drains `python -m server`: nothing new is taken, what was accepted finishes (or is
interrupted at `--drain-timeout`), its cells are in the notebook, WebSockets close 1001."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

from tests.client import Api
from tests.polling import until
from tests.server.server_process import start_server_process


async def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    await asyncio.to_thread(proc.wait, 10)


async def busy(api: Api, user: str) -> bool:
    resp = await api.call("GET", f"/api/sessions/{user}")
    return resp.status == 200 and resp.json["state"] == "busy"


async def notebook_cells(data_dir, user: str) -> list[dict]:
    """The user's notebook, read from a fresh server on the same data dir."""
    proc, api = await start_server_process(data_dir, pool_size=0)
    try:
        resp = await api.call("GET", f"/api/sessions/{user}/notebook?setup=false")
        assert resp.status == 200, resp.body
        return [c for c in json.loads(resp.body)["cells"] if c["cell_type"] == "code"]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)


async def test_sigterm_lets_a_running_execution_finish_and_records_it(tmp_path) -> None:
    data_dir = tmp_path / "d"
    proc, api = await start_server_process(data_dir, pool_size=1)
    try:
        watcher = await api.ws("drain-a")
        code = "import time\ntime.sleep(5)\nprint('finished')"
        running = asyncio.ensure_future(api.execute("drain-a", code, id="slow"))
        await until(lambda: busy(api, "drain-a"), 15)
        proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            resp = await api.call("GET", "/api/health", key=None)
            return resp.status == 503 and resp.json == {"status": "draining"}

        await until(draining, 5)
        for user in ("drain-a", "drain-new"):  # neither a new execution nor a new session
            resp = await api.call("POST", f"/api/sessions/{user}/execute", {"code": "1"})
            assert resp.status == 503, resp.body
            assert resp.json["error"]["code"] == "draining"
            assert int(resp.headers["Retry-After"]) > 0
        resp = await api.call("PUT", "/api/sessions/drain-new")
        assert resp.status == 503 and resp.json["error"]["code"] == "draining"
        await watcher.send({"type": "execute", "id": "late", "code": "2"})
        rejected = (await watcher.until(lambda e: e["type"] == "rejected"))[-1]
        assert rejected["error"]["code"] == "draining" and rejected["id"] == "late"
        assert not running.done()  # the accepted execution still runs

        answer = await running
        assert answer["status"] == "ok" and answer["stdout"] == "finished\n"
        while await watcher.recv(15) is not None:  # the events up to the close
            pass
        assert watcher.conn.close_code == 1001
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        api.close_sockets()
        await stop(proc)
    [cell] = await notebook_cells(data_dir, "drain-a")
    assert cell["metadata"]["kss"]["status"] == "ok"
    assert cell["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "finished\n"}]


async def test_past_the_drain_timeout_the_running_are_interrupted_and_the_queued_aborted(
    tmp_path,
) -> None:
    data_dir = tmp_path / "d"
    args = ("--no-sandbox", "--drain-timeout", "1")
    proc, api = await start_server_process(data_dir, pool_size=1, args=args)
    try:
        sock = await api.ws("drain-b")
        await sock.send({"type": "execute", "id": "spin", "code": "while True:\n    pass"})
        await sock.send({"type": "execute", "id": "queued", "code": "print('never')"})
        await sock.until(lambda e: e["type"] == "queued" and e["id"] == "queued")
        proc.send_signal(signal.SIGTERM)
        events: list[dict] = []
        while {"spin", "queued"} - {e.get("id") for e in events if e["type"] == "done"}:
            events += await sock.until(lambda e: e["type"] == "done", 20)
        done = {e["id"]: e for e in events if e["type"] == "done"}
        assert done["spin"]["status"] == "error"
        assert done["queued"]["status"] == "aborted"
        [error] = [e for e in events if e["type"] == "error" and e["id"] == "spin"]
        assert error["ename"] == "KeyboardInterrupt"
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        api.close_sockets()
        await stop(proc)
    [cell] = await notebook_cells(data_dir, "drain-b")
    assert cell["source"] == "while True:\n    pass"
    assert cell["metadata"]["kss"]["status"] == "error"
    assert cell["outputs"][-1]["ename"] == "KeyboardInterrupt"


async def test_a_second_signal_stops_without_waiting(tmp_path) -> None:
    proc, api = await start_server_process(tmp_path / "d", pool_size=1)
    try:
        sock = await api.ws("drain-c")
        await sock.send({"type": "execute", "id": "spin", "code": "while True:\n    pass"})
        await until(lambda: busy(api, "drain-c"), 15)
        proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return (await api.call("GET", "/api/health", key=None)).status == 503

        await until(draining, 5)
        proc.send_signal(signal.SIGTERM)  # the 30 s drain timeout is not waited for
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        api.close_sockets()
        await stop(proc)
