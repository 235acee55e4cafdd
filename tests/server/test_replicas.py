"""Two replicas (`python -m server` processes with `--replica-id`) sharing one MongoDB and
one data dir, as a load balancer without stickiness would use them: what is set through
one is read through the other, a WebSocket on one streams an execution on the other, a
user's kernel survives the death of its replica as a fresh kernel on the other with the
whole transcript, and a burst of creations across both starts one kernel."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from server.replicas import Replicas
from tests.client import Api
from tests.mongo import database_name
from tests.server.server_process import start_server_process
from transcript.store.leases import Lease

LEASE = 2.0
LONG = "import time\nprint('long', flush=True)\ntime.sleep(60)"


async def start_pair(data: Path, mongo_uri: str) -> list[tuple[subprocess.Popen, Api]]:
    db = database_name()
    return list(
        await asyncio.gather(
            *(
                start_server_process(
                    data,
                    pool_size=1,
                    args=(
                        "--no-sandbox",
                        "--mongodb-uri",
                        mongo_uri,
                        "--mongodb-db",
                        db,
                        "--replica-id",
                        name,
                        "--lease-seconds",
                        str(LEASE),
                    ),
                )
                for name in ("a", "b")
            )
        )
    )


def stop(pair: list[tuple[subprocess.Popen, Api]]) -> None:
    for proc, api in pair:
        api.close_sockets()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _ in pair:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
async def pair(
    tmp_path_factory: pytest.TempPathFactory, mongo_uri: str
) -> AsyncIterator[tuple[Api, Api]]:
    procs = await start_pair(tmp_path_factory.mktemp("shared"), mongo_uri)
    try:
        yield procs[0][1], procs[1][1]
    finally:
        stop(procs)


async def live_sessions(api: Api) -> int:
    return (await api.call("GET", "/api/status")).json["sessions"]


async def runs(api: Api, user: str) -> bool:
    """`user`'s kernel runs on this replica (live sessions are listed with `queued`)."""
    sessions = (await api.call("GET", "/api/sessions")).json["sessions"]
    return any(s["user"] == user and "queued" in s for s in sessions)


async def test_state_set_through_one_replica_is_read_through_the_other(
    pair: tuple[Api, Api],
) -> None:
    a, b = pair
    assert (await a.call("PUT", "/api/sessions/alice")).status == 201
    await a.execute("alice", "x = 41\nopen('from_a.txt', 'w').write('hello')")
    result = await b.execute("alice", "x + 1")  # B forwards it to A, which runs alice
    assert result["result"] == {"text/plain": "42"} and result["kernel_restarted"] is False
    assert (await runs(a, "alice"), await runs(b, "alice")) == (True, False)
    info = (await b.call("GET", "/api/sessions/alice")).json
    assert info["execution_count"] == 2 and info["state"] == "idle"
    upload = await b.call("PUT", "/api/sessions/alice/files/from_b.csv", raw=b"a,b\n1,2\n" * 1000)
    assert upload.status == 201, upload.body
    download = await a.call("GET", "/api/sessions/alice/files/from_b.csv")
    assert download.body == b"a,b\n1,2\n" * 1000
    assert (await b.call("GET", "/api/sessions/alice/files/from_a.txt")).body == b"hello"
    notebook = json.loads((await b.call("GET", "/api/sessions/alice/notebook")).body)
    assert [c["source"] for c in notebook["cells"] if c["cell_type"] == "code"][-1] == "x + 1"
    missing = await b.call("GET", "/api/sessions/alice/files/nope.txt")
    assert missing.status == 404 and missing.json["error"]["code"] == "file_not_found"
    assert (await b.call("GET", "/api/sessions/alice", key="wrong-key-123")).status == 401


async def test_a_websocket_on_one_replica_streams_an_execution_on_the_other(
    pair: tuple[Api, Api],
) -> None:
    a, b = pair
    await a.execute("bob", "y = 'on a'")
    ws = await b.ws("bob")
    code = "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.05)\ny"
    events = await ws.run(code, "e1")
    assert "".join(e["text"] for e in events if e["type"] == "stream") == "0\n1\n2\n3\n4\n"
    assert next(e for e in events if e["type"] == "result")["data"] == {"text/plain": "'on a'"}
    assert (await runs(a, "bob"), await runs(b, "bob")) == (True, False)
    again = await b.ws("bob", since=events[0]["seq"] - 1)  # `since` goes on to the owner
    replayed = await again.until(lambda e: e["type"] == "done" and e.get("id") == "e1")
    assert [e["seq"] for e in replayed] == [e["seq"] for e in events if "seq" in e]


async def test_a_burst_of_creations_across_both_replicas_starts_one_kernel(
    pair: tuple[Api, Api],
) -> None:
    a, b = pair
    answers = await asyncio.gather(*(api.call("PUT", "/api/sessions/burst") for api in [a, b] * 10))
    assert sorted(r.status for r in answers) == [200] * 19 + [201]
    assert {r.json["user"] for r in answers} == {"burst"}
    assert [await runs(a, "burst"), await runs(b, "burst")].count(True) == 1
    counts = []
    for api in (a, b):
        sessions = (await api.call("GET", "/api/sessions")).json["sessions"]
        counts.append(sum(1 for s in sessions if s["user"] == "burst" and s["state"] != "closed"))
    assert counts == [1, 1]  # each lists the one live session (the other's by forwarding)


async def test_when_a_replica_dies_the_other_serves_its_users_with_a_fresh_kernel(
    tmp_path: Path, mongo_uri: str
) -> None:
    procs = await start_pair(tmp_path / "shared", mongo_uri)
    (proc_a, a), (_, b) = procs
    try:
        await a.execute("carol", "z = 1")
        ws = await b.ws("carol")
        before = await ws.run("print('before'); z", "e1")
        await ws.send({"type": "execute", "id": "e2", "code": LONG})
        before += await ws.until(lambda e: e["type"] == "stream" and e["text"] == "long\n")
        ws.close()
        # A writes its transcript a few milliseconds behind: an export through it waits for
        # that, so what follows is everything A had stored (kill -9 loses only the rest).
        assert (await a.call("GET", "/api/sessions/carol/notebook")).status == 200
        proc_a.kill()  # kill -9: no lease released, nothing flushed on the way out
        proc_a.wait()
        after = await b.execute("carol", "print('after'); 'z' in globals()")
        assert after["kernel_restarted"] is True and after["result"] == {"text/plain": "False"}
        assert await runs(b, "carol")
        ws = await b.ws("carol")
        events = await ws.run("2 + 2", "e3")
        assert events[0]["seq"] > before[-1]["seq"]  # the seq continues from the store
        notebook = json.loads(
            (await b.call("GET", "/api/sessions/carol/notebook?setup=false")).body
        )
        code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        assert [c["source"] for c in code] == [
            "z = 1",
            "print('before'); z",
            LONG,
            "print('after'); 'z' in globals()",
            "2 + 2",
        ]
        assert code[1]["outputs"][0]["text"] == "before\n"
        # the cell A was running when it died: what had arrived, marked interrupted
        assert code[2]["metadata"]["kss"]["status"] == "interrupted"
        assert code[2]["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "long\n"}]
        markers = [c["source"] for c in notebook["cells"] if c["cell_type"] == "markdown"]
        assert any("restart" in m.lower() for m in markers)
    finally:
        stop(procs)


async def test_after_expiry_waits_out_a_renewal_the_dead_owner_made_before_it_died() -> None:
    """A replica looks a user's owner up at most once a second; the owner may renew its
    lease after that lookup and then die. The request that found it unreachable must wait
    out that renewal too, not give up at the expiry it first saw."""
    now = time.time()
    seen = Lease("a", "http://a", now + 0.05)
    renewed = Lease("a", "http://a", now + 0.25)  # the renewal A made just before it died
    answers = [renewed, None]  # then it expired, and nobody holds it

    class Scripted:
        async def holder(self, tenant: str, user: str) -> Lease | None:
            return answers.pop(0)

    forwarder = SimpleNamespace(signer=None)
    replicas = Replicas(Scripted(), "b", "http://b", 2.0, None, forwarder)  # type: ignore[arg-type]
    assert await replicas.after_expiry(seen, "t", "carol") is None  # B may take carol over
    assert answers == [] and time.time() >= renewed.expires
