"""The REST API against a real server with real kernels."""

import asyncio
import base64
import errno
import json

from server.errors import error_status
from tests.conftest import KEY

DEEP = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError on it


async def test_health_needs_no_auth(server):
    resp = await server.api.call("GET", "/api/health", key=None)
    assert resp.status == 200 and resp.json == {"status": "ok"}


async def test_state_persists_between_calls(server):
    api = server.api
    r = await api.execute("multi", "x = 1")
    assert r["status"] == "ok" and r["result"] is None and r["execution_count"] == 1
    r = await api.execute("multi", "x + 1")
    assert r["result"] == {"text/plain": "2"} and r["execution_count"] == 2
    r = await api.execute("multi", "print('hello'); import sys; print('oops', file=sys.stderr)")
    assert (r["stdout"], r["stderr"]) == ("hello\n", "oops\n")
    assert r["kernel_restarted"] is False and r["truncated"] is False
    assert r["duration_ms"] > 0


async def test_exception_is_reported(server):
    r = await server.api.execute("err", "def f():\n    raise ValueError('bad thing')\nf()")
    assert r["status"] == "error"
    assert r["error"]["ename"] == "ValueError" and r["error"]["evalue"] == "bad thing"
    assert any("bad thing" in line for line in r["error"]["traceback"])
    assert r["outputs"][-1]["output_type"] == "error"


async def test_matplotlib_figure_arrives_as_png_without_setup(server):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    r = await server.api.execute("plot", code)
    assert r["status"] == "ok", r
    displays = [o for o in r["outputs"] if o["output_type"] == "display_data"]
    assert len(displays) == 1
    png = base64.b64decode(displays[0]["data"]["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


async def test_session_lifecycle(server):
    api = server.api
    resp = await api.call("PUT", "/api/sessions/life")
    assert resp.status == 201 and resp.json["state"] == "idle"
    assert (await api.call("PUT", "/api/sessions/life")).status == 200
    info = (await api.call("GET", "/api/sessions/life")).json
    assert set(info) >= {"user", "state", "created", "last_activity", "execution_count"}
    users = [s["user"] for s in (await api.call("GET", "/api/sessions")).json["sessions"]]
    assert "life" in users
    resp = await api.call("DELETE", "/api/sessions/life")
    assert resp.status == 200
    assert (await api.call("GET", "/api/sessions/life")).json["state"] == "closed"
    resp = await api.call("DELETE", "/api/sessions/life?purge=true")
    assert resp.status == 200
    assert (await api.call("GET", "/api/sessions/life")).status == 404


async def test_status_shows_a_tenant_only_its_own_sessions(server):
    await server.api.execute("status-user", "1")
    await server.state.transcript.flush()
    mine = (await server.api.call("GET", "/api/status")).json
    theirs = (await server.api2.call("GET", "/api/status")).json
    # No pool, disk or totals in use: those are the operators'.
    assert set(mine) == set(theirs) == {"sessions", "sandbox", "store", "replay_memory"}
    sessions = server.state.registry.list("t2")
    assert theirs["replay_memory"] == {
        "bytes": sum(s.events.buffered_bytes for s in sessions),
        "limit_bytes": server.settings.replay_total_bytes,
    }
    assert mine["replay_memory"]["bytes"] > 0
    assert mine["sessions"] >= 1 and mine["store"]["sessions"] >= 1 and mine["store"]["cells"] >= 1
    assert theirs["sessions"] == len(server.state.registry.list("t2"))
    cells = 0
    for record in await server.state.transcript.sessions("t2"):
        cells += len(await server.state.transcript.cells("t2", record.user))
    assert theirs["store"] == {
        "backend": "sqlite",
        "sessions": len(await server.state.transcript.sessions("t2")),
        "cells": cells,
        "state": "ok",  # the store's health, the same for every tenant
        "held": theirs["store"]["held"],
        "dropped": 0,
    }
    assert mine["store"]["backend"] == "sqlite"
    assert mine["sandbox"] == ("off" if server.settings.sandbox == "off" else "uid")


def test_running_out_of_descriptors_is_a_503():
    exc = OSError(errno.EMFILE, "Too many open files")
    assert error_status(exc)[:2] == (503, "server_busy")


async def test_interrupt_and_restart_over_rest(server):
    api = server.api
    await api.execute("ctl", "y = 5")
    resp = await api.call("POST", "/api/sessions/ctl/interrupt")
    assert resp.status == 200 and resp.json["interrupted"] is False  # nothing running
    resp = await api.call("POST", "/api/sessions/ctl/restart")
    assert resp.status == 200 and resp.json["state"] == "idle"
    r = await api.execute("ctl", "y")
    assert r["error"]["ename"] == "NameError" and r["kernel_restarted"] is True


async def test_timeout_interrupts_and_session_stays_usable(server):
    api = server.api
    await api.execute("slow", "z = 7")
    r = await api.execute("slow", "import time\nwhile True: time.sleep(0.05)", timeout=1)
    assert r["status"] == "timeout"
    r = await api.execute("slow", "z")
    assert r["status"] == "ok" and r["result"] == {"text/plain": "7"}  # interrupt kept state


async def test_timeout_on_a_kernel_that_ignores_interrupts_restarts_it(server):
    api = server.api
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    r = await api.execute("stubborn", code, timeout=1)
    assert r["status"] == "timeout"
    r = await api.execute("stubborn", "1 + 1")
    assert r["status"] == "ok" and r["kernel_restarted"] is True


async def test_kernel_death_is_reported_and_recovered(server):
    api = server.api
    await api.execute("dies", "a = 1")
    r = await api.execute("dies", "import os; os._exit(1)")
    assert r["status"] == "error" and r["error"]["ename"] == "KernelDied"
    assert (await api.call("GET", "/api/sessions/dies")).json["state"] == "dead"
    r = await api.execute("dies", "import ctypes; ctypes.string_at(0)")
    assert r["kernel_restarted"] is True
    assert r["status"] == "error" and r["error"]["ename"] == "KernelDied"
    assert "signal 11" in r["error"]["evalue"]
    r = await api.execute("dies", "'a' in dir()")
    assert r["result"] == {"text/plain": "False"} and r["kernel_restarted"] is True


async def test_tenants_are_isolated(server):
    await server.api.execute("shared-name", "secret = 't1'")
    r = await server.api2.execute("shared-name", "'secret' in dir()")
    assert r["result"] == {"text/plain": "False"}  # same user id, other tenant: other kernel
    await server.api.call("PUT", "/api/sessions/only-t1")
    for method, path in [
        ("GET", "/api/sessions/only-t1"),
        ("DELETE", "/api/sessions/only-t1"),
        ("POST", "/api/sessions/only-t1/interrupt"),
        ("POST", "/api/sessions/only-t1/restart"),
    ]:
        resp = await server.api2.call(method, path)
        assert resp.status == 404, (method, path)
        assert resp.json["error"]["code"] == "session_not_found"
    listed = (await server.api2.call("GET", "/api/sessions")).json["sessions"]
    assert "only-t1" not in [s["user"] for s in listed]


async def test_bad_input_gets_json_errors(server):
    api = server.api
    cases = [
        (("POST", "/api/sessions/u1/execute"), {"raw": b"{nope"}, 400, "invalid_json"),
        (("POST", "/api/sessions/u1/execute"), {"raw": b"[]"}, 400, "invalid_json"),
        (("POST", "/api/sessions/u1/execute"), {"raw": b"\xff\xfe"}, 400, "invalid_json"),
        (("POST", "/api/sessions/u1/execute"), {"raw": DEEP}, 400, "invalid_json"),
        (
            ("POST", "/api/sessions/u1/execute"),
            {"raw": b'{"code": "1", "timeout": 1' + b"0" * 400 + b"}"},
            400,
            "invalid_field",
        ),
        (("POST", "/api/sessions/u1/execute"), {"body": {}}, 400, "missing_field"),
        (("POST", "/api/sessions/u1/execute"), {"body": {"code": ["x"]}}, 400, "invalid_field"),
        (
            ("POST", "/api/sessions/u1/execute"),
            {"body": {"code": "1", "timeout": 0}},
            400,
            "invalid_field",
        ),
        (
            ("POST", "/api/sessions/bad%20user/execute"),
            {"body": {"code": "1"}},
            400,
            "invalid_user",
        ),
        (
            ("POST", "/api/sessions/" + "u" * 129 + "/execute"),
            {"body": {"code": "1"}},
            400,
            "invalid_user",
        ),
        (("GET", "/api/sessions/..%2Fetc"), {}, 400, "invalid_user"),
        (("GET", "/api/sessions/never-seen"), {}, 404, "session_not_found"),
        (("POST", "/api/sessions/never-seen/interrupt"), {}, 404, "session_not_found"),
        (("GET", "/api/nothing-here"), {}, 404, "not_found"),
        (("PATCH", "/api/sessions/u1"), {"body": {}}, 405, "method_not_allowed"),
        (("GET", "/api/sessions"), {"key": "wrong-key"}, 401, "unauthorized"),
        (("GET", "/api/sessions"), {"key": None}, 401, "unauthorized"),
        (
            ("GET", "/api/sessions"),
            {"headers": {"Authorization": f"Basic {KEY}"}, "key": None},
            401,
            "unauthorized",
        ),
    ]
    for (method, path), kw, status, code in cases:
        resp = await api.call(method, path, **kw)
        assert resp.status == status, (method, path, resp.body)
        body = resp.json
        assert body["error"]["code"] == code, (method, path, body)
        assert body["error"]["message"]
        assert "Traceback" not in resp.body.decode()


async def test_oversize_code_and_bodies_are_413(server):
    limit = server.settings.max_code_bytes
    resp = await server.api.call("POST", "/api/sessions/big/execute", {"code": "#" * (limit + 1)})
    assert resp.status == 413 and resp.json["error"]["code"] == "payload_too_large"
    huge = json.dumps({"code": "1", "pad": "x" * (server.settings.max_request_bytes + 10)})
    resp = await server.api.call("POST", "/api/sessions/big/execute", raw=huge.encode())
    assert resp.status == 413 and resp.json["error"]["code"] == "payload_too_large"
    r = await server.api.execute("big", "'still fine'")
    assert r["status"] == "ok"


async def test_unauthenticated_requests_do_not_create_sessions(server):
    resp = await server.api.call("POST", "/api/sessions/ghost/execute", {"code": "1"}, key="bad")
    assert resp.status == 401
    assert server.state.registry.find("t1", "ghost") is None


async def test_purge_removes_a_tree_nested_too_deep_for_recursion(server):
    code = (
        "import os\nfd = os.open('.', os.O_RDONLY)\n"
        "for _ in range(1500):\n    os.mkdir('d', dir_fd=fd)\n"
        "    fd2 = os.open('d', os.O_RDONLY, dir_fd=fd); os.close(fd); fd = fd2\n"
        "open('leaf', 'w', opener=lambda p, f: os.open(p, f, dir_fd=fd)).write('x')"
    )
    r = await server.api.execute("deep", code)
    assert r["status"] == "ok", r
    resp = await server.api.call("DELETE", "/api/sessions/deep?purge=true")
    assert resp.status == 200, resp.body
    assert not server.state.registry.work_dir_for("t1", "deep").exists()


async def test_users_arriving_together_each_get_a_kernel_of_their_own(server):
    """A burst of new users (more than the pool and the boot gate hold): all are served."""
    users = [f"burst-{i}" for i in range(6)]
    first = await asyncio.gather(
        *(
            server.api.execute(u, f"secret = {i}\nimport os\nos.getpid(), secret * 10")
            for i, u in enumerate(users)
        )
    )
    assert all(r["status"] == "ok" for r in first), first
    pids = {r["result"]["text/plain"].split(",")[0] for r in first}
    tens = [r["result"]["text/plain"].split(", ")[1] for r in first]
    assert tens == [f"{i * 10})" for i in range(6)]
    assert len(pids) == 6 or server.settings.sandbox == "on"  # pid namespaces reuse pids
    again = await asyncio.gather(*(server.api.execute(u, "secret") for u in users))
    assert [r["result"]["text/plain"] for r in again] == [str(i) for i in range(6)]
    await server.state.pool.wait_warm()  # the spare taken by the burst is replaced
    gate = server.state.pool.boot_gate
    assert gate.running == 0 and gate.waiting == 0
    for u in users:
        assert (await server.api.call("DELETE", f"/api/sessions/{u}")).status in (200, 204)
