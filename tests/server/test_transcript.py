"""Every session is a notebook: durable transcript, download, replay across restarts."""

import json
import signal
from pathlib import Path

import nbformat
import psutil

from tests.conftest import make_settings, running_server
from tests.polling import until
from tests.server.server_process import start_server_process
from transcript.store.sqlite import SqliteStore


def notebook_of(resp):
    assert resp.status == 200, resp.body
    nb = nbformat.reads(resp.body.decode(), as_version=4)
    nbformat.validate(nb)
    return nb


async def test_round_trip_matches_what_the_client_saw(server):
    ws = await server.api.ws("nb")
    steps = [
        ("a", "x = 21\nprint('hello')"),
        ("b", "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()"),
        ("c", "x * 2"),
        ("d", "raise RuntimeError('boom')"),
    ]
    seen = {}
    for exec_id, code in steps:
        seen[exec_id] = await ws.run(code, exec_id)
    resp = await server.api.call("POST", "/api/sessions/nb/notes", {"markdown": "## Reading"})
    assert resp.status == 201
    await ws.send({"type": "restart"})
    await ws.until(lambda e: e["type"] == "status" and e["state"] == "idle")
    seen["e"] = await ws.run("'x' in dir()", "e")

    resp = await server.api.call("GET", "/api/sessions/nb/notebook")
    assert resp.headers["Content-Type"] == "application/x-ipynb+json"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="nb-')
    nb = notebook_of(resp)
    setup, *cells = nb.cells  # the setup cell first: the notebook runs on its own
    assert setup.metadata.tags == ["kss-setup"]
    code_cells = [c for c in cells if c.cell_type == "code"]
    assert [c.source for c in code_cells] == [code for _, code in steps] + ["'x' in dir()"]
    for cell, (exec_id, _) in zip(code_cells, [*steps, ("e", "")], strict=True):
        events = seen[exec_id]
        done = events[-1]
        assert cell.execution_count == done["execution_count"]
        assert cell.metadata["kss"]["status"] == done["status"]
        texts = "".join(e["text"] for e in events if e["type"] == "stream")
        assert (
            "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream") == texts
        )
        pngs = [e["data"]["image/png"] for e in events if e["type"] == "display"]
        assert [
            o.data["image/png"] for o in cell.outputs if o.output_type == "display_data"
        ] == pngs
        errors = [e["ename"] for e in events if e["type"] == "error"]
        assert [o.ename for o in cell.outputs if o.output_type == "error"] == errors
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert markdown[0] == "## Reading" and "Kernel restarted" in markdown[1]
    assert nb.cells.index(code_cells[3]) < nb.cells.index(
        next(c for c in nb.cells if c.source == "## Reading")
    )
    since = notebook_of(
        await server.api.call("GET", "/api/sessions/nb/notebook?since_restart=true")
    )
    assert [c.source for c in since.cells[1:] if c.cell_type == "code"] == ["'x' in dir()"]


async def test_notes_are_seen_by_watchers_and_validated(server):
    ws = await server.api.ws("noted")
    await ws.run("1", "one")
    resp = await server.api.call("POST", "/api/sessions/noted/notes", {"markdown": "*why*"})
    note = await ws.until(lambda e: e["type"] == "note")
    assert note[-1]["markdown"] == "*why*" and resp.json["seq"] == note[-1]["seq"]
    for body, status, code in [
        ({}, 400, "missing_field"),
        ({"markdown": 3}, 400, "invalid_field"),
        ({"markdown": "x" * (server.settings.max_code_bytes + 1)}, 413, "payload_too_large"),
    ]:
        resp = await server.api.call("POST", "/api/sessions/noted/notes", body)
        assert (resp.status, resp.json["error"]["code"]) == (status, code)
    resp = await server.api.call("POST", "/api/sessions/nobody-here/notes", {"markdown": "x"})
    assert resp.status == 404


async def test_unknown_empty_and_other_tenant_notebooks(server):
    assert (await server.api.call("GET", "/api/sessions/ghost/notebook")).status == 404
    await server.api.call("PUT", "/api/sessions/empty")
    nb = notebook_of(await server.api.call("GET", "/api/sessions/empty/notebook"))
    assert nb.cells == []
    resp = await server.api2.call("GET", "/api/sessions/empty/notebook")
    assert resp.status == 404
    resp = await server.api.call("GET", "/api/sessions/empty/notebook?since_restart=maybe")
    assert resp.status == 400


async def test_download_after_shutdown_and_after_server_restart(tmp_path):
    settings = make_settings(tmp_path, pool_size=0)
    async with running_server(settings) as srv:
        ws = await srv.api.ws("durable")
        events = await ws.run("print('kept')", "k1")
        last_seq = events[-1]["seq"]
        ws.close()
        assert (await srv.api.call("DELETE", "/api/sessions/durable")).status == 200
        nb = notebook_of(await srv.api.call("GET", "/api/sessions/durable/notebook"))
        assert nb.cells[0].metadata.tags == ["kss-setup"]  # the notebook runs on its own
        assert nb.cells[1].outputs[0].text == "kept\n"
        await srv.api.execute("durable", "print('second kernel')")
    settings = make_settings(tmp_path, pool_size=0)  # same data dir, new server
    async with running_server(settings) as srv:
        nb = notebook_of(await srv.api.call("GET", "/api/sessions/durable/notebook"))
        assert [c.source for c in nb.cells[1:] if c.cell_type == "code"] == [
            "print('kept')",
            "print('second kernel')",
        ]
        assert any("Kernel restarted" in c.source for c in nb.cells if c.cell_type == "markdown")
        # Replay across the restart: everything after last_seq, then the numbering goes on.
        ws = await srv.api.ws("durable", since=last_seq)
        missed = await ws.until(lambda e: e["type"] == "done")
        assert missed[0]["seq"] == last_seq + 1
        assert any(e.get("text") == "second kernel\n" for e in missed)
        events = await ws.run("'new'", "n")
        assert events[0]["seq"] == missed[-1]["seq"] + 1
        ws.close()


async def stored_running_cell(db: Path, tenant: str, user: str, exec_id: str) -> bool:
    """Whether the write-behind has put on disk the running cell of `exec_id` and the
    output it streamed (what a restart rebuilds it from)."""
    store = SqliteStore(db)
    await store.open()
    try:
        cells = [c for c in await store.running_cells() if c.metadata.get("id") == exec_id]
        if not cells:
            return False
        events = await store.events_between(tenant, user, cells[0].first_seq - 1, 2**62)
        return any(json.loads(body)["type"] == "stream" for _, body in events)
    finally:
        await store.close()


async def test_a_crashed_server_leaves_an_interrupted_cell_and_no_kernels(tmp_path):
    proc, api = await start_server_process(tmp_path, pool_size=0)
    try:
        ws = await api.ws("crash")
        await ws.run("x = 1", "before")
        code = "import time\nprint('partial', flush=True)\ntime.sleep(60)"
        await ws.send({"type": "execute", "id": "cut", "code": code})
        await ws.until(lambda e: e["type"] == "stream")
        db = tmp_path / "kss.sqlite3"
        await until(lambda: stored_running_cell(db, "t1", "crash", "cut"), interval=0.1)
        kernels = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ws.close()
        _, alive = psutil.wait_procs(kernels, timeout=10)
        assert alive == [], "kernels outlived a killed server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    async with running_server(make_settings(tmp_path, pool_size=0)) as srv:
        nb = notebook_of(await srv.api.call("GET", "/api/sessions/crash/notebook"))
        last = nb.cells[-1]
        assert last.source.endswith("time.sleep(60)")
        assert last.metadata["kss"]["status"] == "interrupted"
        assert last.outputs[0].text == "partial\n"
        info = json.loads((await srv.api.call("GET", "/api/sessions/crash")).body)
        assert info["state"] == "closed"  # no kernel until the user comes back


async def test_transcripts_expire_on_their_own_clock(tmp_path):
    import time

    settings = make_settings(tmp_path, pool_size=0)
    async with running_server(settings) as srv:
        await srv.api.execute("old-news", "print('from last week')")
        await srv.api.execute("fresh", "1")
        assert (await srv.api.call("DELETE", "/api/sessions/old-news")).status == 200
        janitor = srv.state.janitor
        # Six days later nothing is gone; eight days later the closed session's transcript
        # and record are, while a session in use (its kernel active) keeps its own.
        srv.state.registry.get("t1", "fresh").last_activity = time.time() + 8 * 86400
        removed = await janitor.sweep(now=time.time() + 6 * 86400)
        assert removed["transcripts"] == 0
        assert (await srv.api.call("GET", "/api/sessions/old-news/notebook")).status == 200
        removed = await janitor.sweep(now=time.time() + 8 * 86400)
        assert removed["transcripts"] == 1
        assert (await srv.api.call("GET", "/api/sessions/old-news/notebook")).status == 404
        assert (await srv.api.call("GET", "/api/sessions/old-news")).status == 404
        assert (await srv.api.call("GET", "/api/sessions/fresh/notebook")).status == 200
