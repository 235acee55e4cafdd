"""One user must never hurt another (issue 17), kernel side, through a real sandboxed server.

Each case was found breaking: a text that could not be stored, floods of events and of huge
or many-framed messages, session slots, processes and threads that outlive their execution,
`kernel_restarted`, host paths and forged messages. Small limits keep each case fast. After
every test a bystander of another tenant still has its state, as in `test_adversarial`.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from tests.client import Api
from tests.conftest import (
    KEY,
    KEY2,
    RunningServer,
    make_settings,
    require_sandbox,
    running_server,
    sandbox_only_module,
)
from tests.polling import until

MB = 1 << 20
USER, BYSTANDER = "walls", "bystander"
ZETA_TENANT, ZETA_KEY, ZETA_USER = "tenant-zeta", "zeta-key-0123456789", "user-omega"
REPO = Path(__file__).resolve().parents[2]

UNAVAILABLE = sandbox_only_module()


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    require_sandbox(UNAVAILABLE)
    settings = make_settings(
        tmp_path_factory.mktemp("walls"),
        sandbox="on",
        kernel_uid_first=2_085_000,
        kernel_uid_last=2_085_099,
        kernel_memory_bytes=512 * MB,
        kernel_pids=48,
        exec_timeout=20,
        output_cap_bytes=300_000,
        output_cap_events=500,
        text_cap_bytes=20_000,
        kernel_message_max_bytes=2 * MB,
        user_quota_bytes=8 * MB,
        api_keys=(("t1", KEY), ("t2", KEY2), (ZETA_TENANT, ZETA_KEY)),
    )
    async with running_server(settings) as server:
        r = await server.api2.execute(BYSTANDER, "kept = 'bystander state'")
        assert r["status"] == "ok", r
        yield server


@pytest_asyncio.fixture(autouse=True)
async def bystander_survives(srv: RunningServer) -> AsyncIterator[None]:
    yield
    for api in (srv.api, srv.api2):
        api.close_sockets()
    r = await srv.api2.execute(BYSTANDER, "kept")
    assert r["status"] == "ok" and r["result"] == {"text/plain": "'bystander state'"}, r
    assert r["kernel_restarted"] is False


async def run(srv: RunningServer, code: str, user: str = USER, **extra: Any) -> dict[str, Any]:
    return await srv.api.execute(user, textwrap.dedent(code), **extra)


def server_rss() -> int:
    return psutil.Process().memory_info().rss


# -- 1. text that cannot be encoded --------------------------------------------------------

# The kernel's own JSON encoder refuses lone surrogates; one that escapes them (as a client
# of the kernel protocol may) sends them as `\ud800`, which Python decodes into a str that
# UTF-8, SQLite and WebSockets all refuse.
ESCAPING_KERNEL = """
import json
from jupyter_client.jsonutil import json_default
k = get_ipython().kernel
k.session.pack = lambda o: json.dumps(o, default=json_default).encode()
"""


async def test_lone_surrogates_from_a_kernel_are_repaired_in_events_store_and_notebook(srv):
    user = "surrogates"
    assert (await run(srv, ESCAPING_KERNEL, user))["status"] == "ok"
    ws = await srv.api.ws(user)
    code = """
    from IPython.display import display
    print("a\\ud800b")
    display({"text/plain": "d\\udfffd", "text/html": "<b>\\ud801</b>"}, raw=True)
    """
    events = await ws.run(textwrap.dedent(code), "s1")
    texts = json.dumps(events, ensure_ascii=False)
    assert "a\ufffdb" in texts and "d\ufffdd" in texts and "<b>\ufffd</b>" in texts, events
    r = await run(srv, "raise ValueError('bad \\ud800 value')", user)
    assert r["status"] == "error" and r["error"]["evalue"] == "bad \ufffd value", r
    # what a bystander of another tenant wrote in the same moments is all stored
    other = await srv.api2.ws("neighbour")
    seen = await other.run("for i in range(50): print(i)", "n1")
    await srv.state.transcript.flush()
    stored = await srv.state.store.events_between("t2", "neighbour", 0, 2**62)
    assert [seq for seq, _ in stored][-1] == seen[-1]["seq"]
    # replay from the store after the session closed, and the notebook, carry the repair
    assert (await srv.api.call("DELETE", f"/api/sessions/{user}")).status == 200
    replay = await srv.api.ws(user, since=0)
    got = await replay.until(lambda e: e.get("id") == "s1" and e["type"] == "done")
    assert "a\ufffdb" in json.dumps(got, ensure_ascii=False)
    nb = await srv.api.call("GET", f"/api/sessions/{user}/notebook")
    assert nb.status == 200 and "a\ufffdb" in nb.body.decode()


async def test_lone_surrogates_from_a_client_are_repaired(srv):
    user = "client-surrogates"
    note = b'{"markdown": "note \\ud800 here"}'
    assert (await srv.api.call("PUT", f"/api/sessions/{user}")).status == 201
    assert (await srv.api.call("POST", f"/api/sessions/{user}/notes", raw=note)).status == 201
    code = b'{"code": "text = \\"x\\\\ud800y\\"  # comment \\udbff\\nlen(text)"}'
    r = await srv.api.call("POST", f"/api/sessions/{user}/execute", raw=code)
    assert r.status == 200 and r.json["status"] == "ok", r.body
    ws = await srv.api.ws(user)
    await ws.send('{"type": "execute", "id": "w1", "code": "print(\'\\udc80\')"}')
    events = await ws.until(lambda e: e["type"] == "done")
    assert any(e["type"] == "stream" and "\ufffd" in e["text"] for e in events), events
    nb = (await srv.api.call("GET", f"/api/sessions/{user}/notebook")).body.decode()
    assert "note \ufffd here" in nb and "comment \ufffd" in nb


async def test_replay_reports_each_lost_run_of_events_as_one_well_formed_gap(srv):
    user = "gappy"
    ws = await srv.api.ws(user)
    for i in range(4):
        await ws.run(f"print({i})", f"g{i}")
    await srv.state.transcript.flush()
    stored = [seq for seq, _ in await srv.state.store.events_between("t1", user, 0, 2**62)]
    lost = {stored[2], stored[3], stored[7]}
    db = srv.state.store._db  # the test removes rows as a disk fault would
    await srv.state.store._run(
        lambda: db.executemany(
            "DELETE FROM events WHERE tenant = 't1' AND user = ? AND seq = ?",
            [(user, seq) for seq in lost],
        )
    )
    assert (await srv.api.call("DELETE", f"/api/sessions/{user}")).status == 200
    replay = await srv.api.ws(user, since=0)
    got = await replay.until(lambda e: e.get("id") == "g3" and e["type"] == "done")
    gaps = [(e["from_seq"], e["to_seq"]) for e in got if e["type"] == "gap"]
    assert gaps == [(stored[2], stored[3]), (stored[7], stored[7])], got
    assert [e["seq"] for e in got if "seq" in e] == [s for s in stored if s not in lost]


# -- 5. event floods -------------------------------------------------------------------------

FLOODS = {
    "empty displays": "from IPython.display import display\nwhile True:\n    display({}, raw=True)",
    "display updates": (
        "from IPython.display import display, update_display\n"
        "display({'text/plain': '0'}, raw=True, display_id='d')\n"
        "while True:\n    update_display({'text/plain': '1'}, raw=True, display_id='d')"
    ),
    "clear_output": "from IPython.display import clear_output\nwhile True:\n    clear_output()",
}


@pytest.mark.parametrize("flood", FLOODS)
async def test_an_event_flood_is_capped_by_count_and_marked(srv, flood):
    before = server_rss()
    ws = await srv.api.ws("flooder")
    events = await ws.run(FLOODS[flood], f"f-{flood[:5]}", timeout=3)
    done = events[-1]
    assert done["status"] == "timeout" and done["truncated"] is True
    outputs = [e for e in events if e["type"] in ("display", "clear_output", "stream")]
    assert len(outputs) <= srv.settings.limits.max_events + 2
    assert "more than 500 outputs" in outputs[-1]["text"]
    assert server_rss() - before < 100 * MB
    r = await run(srv, "'after'", "flooder")
    assert r["status"] == "ok" and r["truncated"] is False


# -- 6. message size -------------------------------------------------------------------------


async def test_a_huge_write_costs_the_server_only_what_clients_get(srv):
    before = server_rss()
    r = await run(srv, "import sys\nsys.stdout.write('x' * 120_000_000)\n'done'", "writer")
    assert r["status"] == "ok" and r["truncated"] is True, {**r, "outputs": "..."}
    assert sum(len(o.get("text", "")) for o in r["outputs"]) <= 300_000 + 200
    assert server_rss() - before < 100 * MB


FORGED_SENDS = {
    "one frame over the limit": (
        "k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 'x' * 5_000_000},"
        " parent=k.get_parent())"
    ),
    "many frames": (
        "k.session.send(k.iopub_socket, 'display_data', {'data': {}, 'metadata': {}},"
        " parent=k.get_parent(), buffers=[b'x' * 1_000_000] * 150)"
    ),
}


@pytest.mark.parametrize("send", FORGED_SENDS)
async def test_a_message_over_the_size_limit_is_discarded_as_it_arrives(srv, send):
    before = server_rss()
    code = f"k = get_ipython().kernel\n{FORGED_SENDS[send]}\nprint('still here')"
    r = await run(srv, code, "bigsender")
    assert r["status"] == "ok" and r["stdout"] == "still here\n", {**r, "outputs": "..."}
    assert "over the kernel message limit" in r["stderr"]
    assert server_rss() - before < 60 * MB


# -- forged and malformed messages -------------------------------------------------------------

FORGE = """
k = get_ipython().kernel
p = k.get_parent()
k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 123}, parent=p)
k.session.send(k.iopub_socket, 'display_data', {'data': 'x', 'metadata': {}}, parent=p)
k.session.send(k.iopub_socket, 'execute_result',
               {'data': {'text/plain': 5}, 'metadata': {}, 'execution_count': 'x'}, parent=p)
k.session.send(k.iopub_socket, 'error', {'ename': None, 'evalue': [], 'traceback': 'x'},
               parent=p)
msg = k.session.msg('stream', {'name': 'stdout', 'text': 'unsigned'}, parent=p)
frames = k.session.serialize(msg)
frames[1] = b'0' * 64  # a signature that does not match
k.iopub_socket.send_multipart([b'stream', *frames])
deep = b'{"name": "stdout", "text": ' + b'[' * 100_000 + b']' * 100_000 + b'}'
frames = k.session.serialize(msg)
frames[5] = deep
sig = k.session.sign(frames[2:6])
frames[1] = sig if isinstance(sig, bytes) else sig.encode()
k.iopub_socket.send_multipart([b'stream', *frames])
print('still here')
"""


async def test_forged_messages_become_notes_in_the_cell_never_a_500(srv):
    r = await run(srv, FORGE, "forger")
    assert r["status"] == "ok" and r["stdout"] == "still here\n", r
    assert r["stderr"].count("[dropped a malformed") == 6, r["stderr"]
    r = await run(srv, "1 + 1", "forger")
    assert r["result"] == {"text/plain": "2"} and r["kernel_restarted"] is False


# -- 7. session slots ----------------------------------------------------------------------------


async def test_one_tenant_cannot_lock_the_others_out(tmp_path):
    settings = make_settings(tmp_path, pool_size=0, max_sessions=3, max_sessions_per_tenant=2)
    async with running_server(settings) as server:
        for user in ("a", "b", "c"):  # the tenant's third evicts its own least recent
            assert (await server.api.call("PUT", f"/api/sessions/{user}")).status == 201
        listed = (await server.api.call("GET", "/api/sessions")).json["sessions"]
        assert {s["user"]: s["state"] for s in listed}["a"] == "closed"
        for user in ("x", "y"):  # another tenant gets its share at once
            assert (await server.api2.call("PUT", f"/api/sessions/{user}")).status == 201
        # full now: a new user of either tenant reclaims an idle session instead of a 503
        assert (await server.api.call("PUT", "/api/sessions/d")).status == 201
        assert server.state.registry.count() == 3


async def test_a_full_server_of_busy_sessions_refuses_clearly(tmp_path):
    settings = make_settings(tmp_path, pool_size=0, max_sessions=1)
    async with running_server(settings) as server:
        ws = await server.api.ws("busy")
        await ws.send({"type": "execute", "id": "b", "code": "import time; time.sleep(30)"})
        await ws.until(lambda e: e["type"] == "status" and e["state"] == "busy")
        r = await server.api2.call("PUT", "/api/sessions/other")
        assert r.status == 503 and r.json["error"]["code"] == "capacity_exceeded"
        assert (await server.api.call("POST", "/api/sessions/busy/interrupt")).status == 200
        await ws.until(lambda e: e["type"] == "done")
        server.api.close_sockets()


# -- 8. processes left behind -----------------------------------------------------------------

SPINNER = """
import os
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        with open("spinner.pid", "w") as f:
            f.write(str(os.getpid()))
        while True:
            pass
    os._exit(0)
os.waitpid(pid, 0)
while not os.path.exists("spinner.pid") or not open("spinner.pid").read():
    pass
"""


async def test_processes_an_execution_leaves_running_are_stopped(srv):
    user = "spinner"
    r = await run(srv, SPINNER, user)
    assert r["status"] == "ok", r
    interrupted = await srv.api.call("POST", f"/api/sessions/{user}/interrupt")
    assert interrupted.json == {"interrupted": False}
    alive = (
        "pid = open('spinner.pid').read()\n"
        "try:\n    state = open(f'/proc/{pid}/stat').read().rpartition(')')[2].split()[0]\n"
        "except OSError:\n    state = 'gone'\n"
        "state not in ('gone', 'Z', 'X')"  # a zombie is stopped, waiting for its reaper
    )
    r = await run(srv, alive, user)
    assert r["result"] == {"text/plain": "False"}, r
    assert r["kernel_restarted"] is False


async def test_a_fork_storm_replaces_the_kernel_and_says_so(srv):
    user = "forker"
    await run(srv, "kept = 1", user)
    storm = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        break"
    )
    r = await run(srv, storm, user, timeout=10)
    assert r["status"] in ("error", "timeout"), r
    assert r["error"]["ename"] in ("ProcessLimitExceeded", "KernelDied"), r["error"]
    r = await run(srv, "'kept' in dir()", user)
    assert r["result"] == {"text/plain": "False"} and r["kernel_restarted"] is True, r


# -- 9. output of threads --------------------------------------------------------------------


async def test_a_threads_output_belongs_to_the_execution_that_started_it(srv):
    user = "threads"
    ws = await srv.api.ws(user)
    start = """
    import threading
    from concurrent.futures import ThreadPoolExecutor
    go = threading.Event()
    def worker(tag):
        go.wait()
        for i in range(3):
            print(tag, i)
    threading.Thread(target=worker, args=("thread",)).start()
    pool = ThreadPoolExecutor(1)
    pool.submit(worker, "task")
    """
    first = await ws.run(textwrap.dedent(start), "starter")
    assert not [e for e in first if e["type"] == "stream"]
    second = await ws.run("go.set()\npool.shutdown()\nprint('second')", "second")
    mine = [e for e in second if e.get("id") == "second" and e["type"] == "stream"]
    assert "".join(e["text"] for e in mine) == "second\n", second
    late = [e for e in second if e.get("id") == "starter"]

    def texts() -> str:
        return "".join(e["text"] for e in late if e["type"] == "stream")

    while texts().count("thread") < 3 or texts().count("task") < 3:
        late.append(await ws.recv())
    assert all(e.get("late") is True and e["id"] == "starter" for e in late), late

    # the notebook files late output in the cell of the execution that started the thread
    async def filed() -> dict | None:
        nb = json.loads((await srv.api.call("GET", f"/api/sessions/{user}/notebook")).body)
        cells = {c["metadata"]["kss"]["id"]: c for c in nb["cells"] if c["cell_type"] == "code"}
        text = "".join(o.get("text", "") for o in cells["starter"]["outputs"])
        return cells if "thread 2" in text and "task 2" in text else None

    cells = await until(filed, interval=0.1)
    assert "".join(o.get("text", "") for o in cells["second"]["outputs"]) == "second\n"


# -- 3. the quota and writers that outlive their execution ----------------------------------

WRITER = """
import threading, time
def write():
    with open("{name}", "wb") as f:
        while True:
            f.write(b"x" * 500_000)
            f.flush()
            time.sleep(0.05)  # about 10 MB/s: it keeps growing for a while
threading.Thread(target=write, daemon=True).start()
"""


@pytest.mark.parametrize("ends", ["returns", "times out"])
async def test_a_writer_that_outlives_its_execution_is_stopped_at_the_quota(srv, ends):
    user = f"writer-{ends.replace(' ', '-')}"
    ws = await srv.api.ws(user)
    code = WRITER.format(name="big.bin")
    if ends == "times out":
        code += "import time\ntime.sleep(60)"
    events = await ws.run(code, "w", timeout=1)
    # Timing out, it may also be stopped by the guard while it still runs.
    expected = ("ok",) if ends == "returns" else ("timeout", "error")
    assert events[-1]["status"] in expected, events

    # The guard stops the writer within the execution (its interrupt's grace, when the
    # writer outlives the interrupt) or after it, as a late error of that execution.
    def stopped(e: dict) -> bool:
        return (
            e["type"] == "error" and e["ename"] == "DiskQuotaExceeded" and "replaced" in e["evalue"]
        )

    stop = [e for e in events if stopped(e)] or await ws.until(stopped)
    assert stop[-1]["id"] == "w"
    r = await run(srv, "import os\nos.path.getsize('big.bin')", user)
    assert r["kernel_restarted"] is True
    size = int(r["result"]["text/plain"])
    assert size < srv.settings.files.quota + 200 * MB  # stopped, not left running
    r = await run(srv, "os.path.getsize('big.bin')", user)
    assert int(r["result"]["text/plain"]) == size  # nothing writes any more
    await run(srv, "os.remove('big.bin')", user)


# -- 10. kernel_restarted -------------------------------------------------------------------


async def test_kernel_restarted_is_true_after_the_session_was_deleted(srv):
    user = "deleted"
    assert (await run(srv, "x = 1", user))["kernel_restarted"] is False
    assert (await srv.api.call("DELETE", f"/api/sessions/{user}")).status == 200
    r = await run(srv, "'x' in dir()", user)
    assert r["result"] == {"text/plain": "False"} and r["kernel_restarted"] is True
    assert (await run(srv, "1", user))["kernel_restarted"] is False


async def test_kernel_restarted_is_true_after_a_server_restart(tmp_path):
    from tests.server.server_process import start_server_process

    # Without hibernation: with it, `x` would come back (tests/server/test_hibernate.py).
    args = ("--no-sandbox", "--hibernate", "off")
    proc, api = await start_server_process(tmp_path, pool_size=0, args=args)
    try:
        assert (await api.execute("u", "x = 1"))["kernel_restarted"] is False
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
    proc, api = await start_server_process(tmp_path, pool_size=0, args=args)
    try:
        r = await api.execute("u", "'x' in dir()")
        assert r["result"] == {"text/plain": "False"} and r["kernel_restarted"] is True
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)


# -- 11. host paths -----------------------------------------------------------------------------

READ_EVERYTHING = """
import glob, json, os, sys
def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\\0", b" ").decode(errors="replace")
    except OSError as e:
        return type(e).__name__
paths = ["/proc/1/cmdline", "/proc/self/cmdline", "/proc/self/environ",
         "/proc/self/mountinfo", "/proc/self/cgroup", "/etc/passwd", "/etc/group",
         sys.argv[sys.argv.index("-f") + 1], *glob.glob("/proc/[0-9]*/cmdline"),
         *glob.glob(sys.prefix + "/bin/*"), sys.prefix + "/pyvenv.cfg"]
texts = {p: read(p) for p in paths if not os.path.isdir(p)}
found = {p: [s for s in SECRETS if s in t] for p, t in texts.items()}
print(json.dumps({"found": {p: f for p, f in found.items() if f},
                  "mountinfo": texts["/proc/self/mountinfo"][:5000],
                  "pid1": texts["/proc/1/cmdline"][:200]}))
"""


async def test_nothing_a_kernel_can_read_names_a_host_path_tenant_or_user(srv):
    zeta = Api(srv.base, ZETA_KEY)
    data_dir = str(srv.settings.data_dir)
    never = [ZETA_TENANT, ZETA_USER, str(REPO), str(srv.settings.runtime_dir)]
    code = f"SECRETS = {[*never, data_dir]!r}\n" + READ_EVERYTHING
    r = await zeta.execute(ZETA_USER, code)
    assert r["status"] == "ok", r
    seen = json.loads(r["stdout"])
    for path, found in seen["found"].items():
        # bind sources show in the mount table, under opaque names: the work dir in the
        # data dir, the kernel's runtime and slot dirs under the runtime root
        runtime = str(srv.settings.runtime_dir)
        allowed = [data_dir, runtime] if path == "/proc/self/mountinfo" else []
        assert set(found) <= set(allowed), f"{path} names {found}: {seen['mountinfo']}"
    assert seen["pid1"].startswith("/usr/bin/bwrap --args ")
