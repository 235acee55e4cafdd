"""A notebook that runs on its own, a bundle that reproduces the session, and resuming a
session from a notebook or a bundle, through a real server and real kernels; the bundle's
notebook is run by nbclient on a kernel of the kernel environment, as a user would."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kernels.launcher import default_kernel_python
from tests.conftest import RunningServer

SALES = b"region,amount\nnorth,100\nsouth,250\nnorth,50\n"
CELLS = [
    "df = load_file('sales.csv')\ntotal = float(df['amount'].sum())\nprint(FILES)",
    "df['revenue']",  # fails: KeyError
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots()\n"
    "ax.bar(df['region'], df['amount'])\n"
    "fig.savefig('chart.png')\n"
    "plt.show()",
    "import json\n"
    "summary = {'rows': len(df), 'total': total}\n"
    "with open('summary.json', 'w') as f:\n"
    "    json.dump(summary, f)",
]
COMPARE = "(len(df), total, summary, sorted(FILES))"


async def record_session(srv: RunningServer, user: str) -> None:
    resp = await srv.api.call("PUT", f"/api/sessions/{user}/files/sales.csv", raw=SALES)
    assert resp.status == 201, resp.body
    statuses = [(await srv.api.execute(user, code))["status"] for code in CELLS]
    assert statuses == ["ok", "error", "ok", "ok"]


def notebook_of(body: bytes) -> nbformat.NotebookNode:
    nb = nbformat.reads(body.decode(), as_version=4)
    nbformat.validate(nb)
    return nb


async def test_the_notebook_runs_on_its_own(server: RunningServer):
    await record_session(server, "nb-own")
    resp = await server.api.call("GET", "/api/sessions/nb-own/notebook")
    nb = notebook_of(resp.body)
    setup, *cells = nb.cells
    assert setup.metadata.tags == ["kss-setup"] and "def load_file" in setup.source
    assert [c.source for c in cells] == CELLS
    assert [c.metadata.get("tags", []) for c in cells] == [[], ["raises-exception"], [], []]
    assert nb.metadata.kss.files == [
        {"name": "sales.csv", "size": len(SALES), "sha256": hashlib.sha256(SALES).hexdigest()}
    ]
    plain = notebook_of(
        (await server.api.call("GET", "/api/sessions/nb-own/notebook?setup=0")).body
    )
    assert [c.source for c in plain.cells] == CELLS


async def run_with_nbclient(
    path: Path, jupyter: Path, monkeypatch: pytest.MonkeyPatch
) -> nbformat.NotebookNode:
    """Run the notebook at `path` in its own directory, on a kernel of the kernel
    environment (a kernelspec of its own, found through JUPYTER_PATH)."""
    spec = jupyter / "kernels" / "kss-env"
    spec.mkdir(parents=True)
    argv = [default_kernel_python(), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "kss env", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name="kss-env", timeout=120, resources={"metadata": {"path": str(path.parent)}}
    )
    await client.async_execute()
    return nb


async def test_the_bundle_reproduces_the_session(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    await record_session(server, "nb-bundle")
    resp = await server.api.call("GET", "/api/sessions/nb-bundle/bundle")
    assert resp.status == 200, resp.body
    assert resp.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.body)) as zf:
        names = sorted(zf.namelist())
        notebook = next(n for n in names if n.endswith(".ipynb"))
        assert names == sorted([notebook, "chart.png", "sales.csv", "summary.json"])
        assert zf.read("sales.csv") == SALES
        zf.extractall(tmp_path / "unzipped")
    (tmp_path / "unzipped" / "chart.png").unlink()  # the notebook makes them again
    (tmp_path / "unzipped" / "summary.json").unlink()
    ran = await run_with_nbclient(
        tmp_path / "unzipped" / notebook, tmp_path / "jupyter", monkeypatch
    )
    outputs = [o for c in ran.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.output_type == "error" and o.ename == "KeyError" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    summary = json.loads((tmp_path / "unzipped" / "summary.json").read_text())
    assert summary == {"rows": 3, "total": 400.0}


async def test_resume_a_new_user_from_the_bundle(server: RunningServer):
    await record_session(server, "nb-source")
    bundle = (await server.api.call("GET", "/api/sessions/nb-source/bundle")).body
    ws = await server.api.ws("nb-copy")
    resp = await server.api.call(
        "POST",
        "/api/sessions/nb-copy/notebook?id=resume1",
        raw=bundle,
        headers={"Content-Type": "application/zip"},
    )
    assert resp.status == 200, resp.body
    answer = resp.json
    assert answer["id"] == "resume1"
    assert answer["files"] == ["chart.png", "sales.csv", "summary.json"]
    assert [r["status"] for r in answer["ran"]] == ["ok", "error", "ok", "ok"]
    assert [r["cell"] for r in answer["ran"]] == [1, 2, 3, 4]
    assert answer["failed"] is None
    assert answer["skipped"] == [{"cell": 0, "id": "kss-setup", "why": "setup"}]
    # Watchers saw every cell as an ordinary execution, by its id.
    events = await ws.until(lambda e: e["type"] == "done" and e.get("id") == "resume1-4")
    assert [e["id"] for e in events if e["type"] == "done"] == [
        f"resume1-{n}" for n in (1, 2, 3, 4)
    ]
    ws.close()
    source = await server.api.execute("nb-source", COMPARE)
    copy = await server.api.execute("nb-copy", COMPARE)
    assert copy["result"] == source["result"]
    files = (await server.api.call("GET", "/api/sessions/nb-copy/files")).json["files"]
    assert {f["name"]: f["origin"] for f in files}["sales.csv"] == "upload"


def notebook_json(*sources: str, failing_tag: int | None = None) -> bytes:
    cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if failing_tag is not None:
        cells[failing_tag].metadata["tags"] = ["raises-exception"]
    return nbformat.writes(nbformat.v4.new_notebook(cells=cells)).encode()


async def test_resume_stops_at_the_first_unexpected_failure(server: RunningServer):
    api = server.api
    body = notebook_json("a = 1", "", "1/0", "b = 2")
    resp = await api.call(
        "POST",
        "/api/sessions/nb-stop/notebook",
        raw=body,
        headers={"Content-Type": "application/x-ipynb+json"},
    )
    assert resp.status == 200, resp.body
    answer = resp.json
    assert [r["status"] for r in answer["ran"]] == ["ok", "error"]
    assert answer["failed"]["cell"] == 2
    assert answer["failed"]["error"]["ename"] == "ZeroDivisionError"
    assert answer["skipped"] == [
        {"cell": 1, "id": answer["skipped"][0]["id"], "why": "empty"},
        {"cell": 3, "id": answer["skipped"][1]["id"], "why": "after a failure"},
    ]
    assert (await api.execute("nb-stop", "b"))["error"]["ename"] == "NameError"
    allowed = notebook_json("1/0", "c = 3", failing_tag=0)
    answer = (await api.call("POST", "/api/sessions/nb-stop/notebook", raw=allowed)).json
    assert answer["failed"] is None and [r["status"] for r in answer["ran"]] == ["error", "ok"]


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "bad_notebook"),
        (
            b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 3}',
            "",
            400,
            "bad_notebook",
        ),
        (b"", "application/x-ipynb+json", 400, "bad_notebook"),
        (b'{"a": 1}', "application/zip", 400, "bad_bundle"),
        (zip_of({"data.csv": b"x"}), "application/zip", 400, "bad_bundle"),
        (zip_of({"a.ipynb": notebook_json("1"), "../up.txt": b"x"}), "", 400, "bad_file_name"),
        (zip_of({"a.ipynb": notebook_json("1"), ".hidden": b"x"}), "", 400, "bad_file_name"),
        (b"PK\x03\x04" + b"\0" * 100, "application/zip", 400, "bad_bundle"),
    ],
)
async def test_resume_refuses_what_it_cannot_run(server, body, content_type, status, code):
    resp = await server.api.call(
        "POST",
        "/api/sessions/nb-bad/notebook",
        raw=body,
        headers={"Content-Type": content_type} if content_type else None,
    )
    assert resp.status == status, resp.body
    assert resp.json["error"]["code"] == code
    listing = (await server.api.call("GET", "/api/sessions/nb-bad/files")).json
    assert listing.get("files", []) == []  # nothing was copied before the refusal


async def test_bundle_of_an_unknown_session_is_404(server: RunningServer):
    resp = await server.api.call("GET", "/api/sessions/nobody-at-all/bundle")
    assert (resp.status, resp.json["error"]["code"]) == (404, "session_not_found")
    resp = await server.api2.call("GET", "/api/sessions/nb-own/bundle")
    assert resp.status == 404
