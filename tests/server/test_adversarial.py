"""Issue 6 through the server: a real server with the sandbox on, attacked from a user's code.

After every attack the server still answers, a bystander user's kernel still holds its state,
and the attacker's execution ends with a clear status (an error naming the cause, a timeout,
or an OSError naming the denied operation). Small limits keep the attacks fast.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import (
    RunningServer,
    make_settings,
    require_sandbox,
    running_server,
    sandbox_only_module,
)

MB = 1 << 20
MEMORY, PIDS, TMP, FILE_BYTES = 256 * MB, 64, 16 * MB, 5_000_000
ATTACKER, BYSTANDER = "mallory", "bystander"

UNAVAILABLE = sandbox_only_module()


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    require_sandbox(UNAVAILABLE)
    settings = make_settings(
        tmp_path_factory.mktemp("adversarial"),
        sandbox="on",
        kernel_uid_first=2_080_000,
        kernel_uid_last=2_080_099,
        kernel_memory_bytes=MEMORY,
        kernel_pids=PIDS,
        kernel_tmp_bytes=TMP,
        kernel_file_bytes=FILE_BYTES,
        exec_timeout=10,
        interrupt_grace=2,
        output_cap_bytes=1_000_000,
        text_cap_bytes=20_000,
    )
    async with running_server(settings) as server:
        r = await server.api.execute(BYSTANDER, "x = 42\nopen('secret.txt', 'w').write('b-only')")
        assert r["status"] == "ok", r
        yield server


@pytest_asyncio.fixture(autouse=True)
async def bystander_survives(srv: RunningServer) -> AsyncIterator[None]:
    yield
    health = await srv.api.call("GET", "/api/health", key=None)
    assert health.status == 200 and health.json == {"status": "ok"}
    r = await srv.api.execute(BYSTANDER, "x")
    assert r["status"] == "ok" and r["result"] == {"text/plain": "42"}, r
    assert r["kernel_restarted"] is False


# What every probe starts with: `out` to fill, and `try_(fn, *args)`, which records "OK" or
# the name of the OSError `fn` raised.
PRELUDE = """import json, os
out = {}
def try_(fn, *args):
    try:
        fn(*args)
        return "OK"
    except OSError as e:
        return type(e).__name__
"""


async def run(srv: RunningServer, code: str, **extra: Any) -> dict[str, Any]:
    return await srv.api.execute(ATTACKER, textwrap.dedent(code), **extra)


async def probe(srv: RunningServer, code: str) -> dict[str, Any]:
    """Run `code` (which fills the dict `out`) as the attacker and return `out`."""
    wrapped = PRELUDE + textwrap.dedent(code) + "\nprint(json.dumps(out))"
    r = await run(srv, wrapped)
    assert r["status"] == "ok", r["error"]
    return json.loads(r["stdout"].strip().splitlines()[-1])


def assert_died(r: dict[str, Any], *words: str) -> None:
    assert r["status"] == "error" and r["error"]["ename"] == "KernelDied", r
    for word in words:
        assert word in r["error"]["evalue"], r["error"]


async def assert_recovers(srv: RunningServer) -> None:
    """The attacker's next execution gets a fresh, working kernel."""
    r = await run(srv, "'back'")
    assert r["status"] == "ok" and r["result"] == {"text/plain": "'back'"}, r
    assert r["kernel_restarted"] is True


# -- the work dir ----------------------------------------------------------------------------


async def test_cwd_is_mnt_data_and_the_files_api_serves_the_same_files(srv) -> None:
    put = await srv.api.call("PUT", f"/api/sessions/{ATTACKER}/files/up.txt", raw=b"uploaded")
    assert put.status == 201, put.body
    out = await probe(
        srv,
        """
        out["cwd"] = os.getcwd()
        out["up"] = open("up.txt").read()
        open("made.txt", "w").write("made in the kernel")
        """,
    )
    assert out == {"cwd": "/mnt/data", "up": "uploaded"}
    got = await srv.api.call("GET", f"/api/sessions/{ATTACKER}/files/made.txt")
    assert got.status == 200 and got.body == b"made in the kernel"


# -- resources ---------------------------------------------------------------------------


async def test_huge_allocation_is_a_memory_error(srv) -> None:
    await run(srv, "kept = 'state'")
    r = await run(srv, "bytearray(10**11)")
    assert r["status"] == "error" and r["error"]["ename"] == "MemoryError", r
    r = await run(srv, "kept")
    assert r["result"] == {"text/plain": "'state'"} and r["kernel_restarted"] is False


async def test_memory_growth_kills_the_kernel_naming_the_memory_limit(srv) -> None:
    r = await run(srv, "chunks = []\nwhile True:\n    chunks.append(b'x' * 10**7)")
    assert_died(r, "memory")
    info = await srv.api.call("GET", f"/api/sessions/{ATTACKER}")
    assert info.json["state"] == "dead"
    await assert_recovers(srv)


async def test_fork_bomb_is_held_by_the_pids_limit(srv) -> None:
    r = await run(srv, "import os\nwhile True:\n    os.fork()", timeout=3)
    # 64 copies of the kernel dirty enough copy-on-write pages to reach the memory limit
    # first on small limits; either way the bomb ends with a clear status.
    if r["status"] != "timeout":
        assert_died(r, "memory")
    out = await probe(srv, "out['pids'] = len([p for p in os.listdir('/proc') if p.isdigit()])")
    assert out["pids"] <= PIDS, out
    restart = await srv.api.call("POST", f"/api/sessions/{ATTACKER}/restart")
    assert restart.status == 200, restart.body  # ends every process of the sandbox
    out = await probe(srv, "out['pids'] = len([p for p in os.listdir('/proc') if p.isdigit()])")
    assert out["pids"] <= 3, out


async def test_infinite_loop_times_out_and_interrupt_keeps_state(srv) -> None:
    await run(srv, "kept = 'state'")
    r = await run(srv, "while True:\n    pass", timeout=1.5)
    assert r["status"] == "timeout", r
    assert r["error"]["ename"] == "KeyboardInterrupt", r
    r = await run(srv, "kept")
    assert r["result"] == {"text/plain": "'state'"} and r["kernel_restarted"] is False


async def test_output_flood_is_capped(srv) -> None:
    flood = "import time\nwhile True:\n    print('x' * 1000)\n    time.sleep(0.0001)"
    r = await run(srv, flood, timeout=3)
    assert r["status"] == "timeout" and r["truncated"] is True, {**r, "outputs": "..."}
    assert len(r["stdout"]) <= srv.settings.limits.text_cap + 200
    assert "output truncated" in r["stdout"]
    sent = sum(len(o.get("text", "")) for o in r["outputs"])
    assert sent <= srv.settings.limits.client_cap + 200
    r = await run(srv, "'quiet'")
    assert r["status"] == "ok" and r["truncated"] is False
    # Flat out, ipykernel buffers output faster than it sends it (0.2 s flush interval):
    # on a small memory limit the kernel dies of it, and says so.
    r = await run(srv, "while True:\n    print('x' * 10_000)", timeout=3)
    if r["status"] != "timeout":
        assert_died(r, "memory")


async def test_os_exit_is_reported_as_kernel_death(srv) -> None:
    r = await run(srv, "import os\nos._exit(3)")
    assert_died(r, "exited with code 3")
    await assert_recovers(srv)


async def test_segfault_is_reported_as_kernel_death(srv) -> None:
    r = await run(srv, "import ctypes\nctypes.string_at(0)")
    assert_died(r, "signal 11")
    await assert_recovers(srv)


async def test_filling_tmp_stops_at_its_size(srv) -> None:
    out = await probe(
        srv,
        f"""
        import glob
        written = 0
        try:
            for i in range({TMP // MB + 16}):  # 1 MiB files: under the file size limit
                with open(f"/tmp/fill{{i}}", "wb") as f:
                    f.write(b"x" * {MB})
                written += {MB}
        except OSError as e:
            out["error"] = os.strerror(e.errno)
        out["written"] = written
        for name in glob.glob("/tmp/fill*"):
            os.remove(name)
        """,
    )
    assert out["error"] == os.strerror(28) and out["written"] <= TMP, out  # ENOSPC


async def test_file_over_the_size_limit_cannot_be_written(srv) -> None:
    out = await probe(
        srv,
        f"""
        try:
            with open("big.bin", "wb") as f:
                f.write(b"x" * {FILE_BYTES + MB})
            out["error"] = None
        except OSError as e:
            out["error"] = os.strerror(e.errno)
        out["size"] = os.path.getsize("big.bin")
        os.remove("big.bin")
        """,
    )
    assert out["error"] == os.strerror(27) and out["size"] <= FILE_BYTES, out  # EFBIG


# -- network ---------------------------------------------------------------------------------


async def test_no_network(srv) -> None:
    out = await probe(
        srv,
        f"""
        import socket
        def connect(addr):
            try:
                socket.create_connection(addr, timeout=3).close()
                return "CONNECTED"
            except OSError as e:
                return type(e).__name__
        out["server"] = connect(("127.0.0.1", {srv.settings.port}))
        out["public"] = connect(("192.0.2.1", 80))
        try:
            socket.getaddrinfo("example.com", 443)
            out["dns"] = "RESOLVED"
        except OSError as e:
            out["dns"] = type(e).__name__
        """,
    )
    assert "CONNECTED" not in (out["server"], out["public"]) and out["dns"] != "RESOLVED", out


# -- files outside the work dir ----------------------------------------------------------


async def test_host_files_and_other_users_are_unreadable(srv) -> None:
    data = srv.settings.data_dir
    other = srv.state.registry.work_dir_for("t1", BYSTANDER)
    assert (other / "secret.txt").read_text() == "b-only"
    paths = [
        "/etc/shadow",
        "/root",
        "/root/.bashrc",
        str(other / "secret.txt"),
        str(other),
        f"../{BYSTANDER}/secret.txt",
        f"/mnt/data/../{BYSTANDER}/secret.txt",
        f"../../t1/{BYSTANDER}/secret.txt",
        str(data),
        str(data / "kss.sqlite3"),
        str(data / "staging"),
        f"/proc/{os.getpid()}/environ",
    ]
    out = await probe(
        srv,
        f"""
        def read(path):
            try:
                if os.path.isdir(path):
                    return "LISTED:" + ",".join(os.listdir(path))
                with open(path, "rb") as f:
                    return "READ:" + f.read(20).decode(errors="replace")
            except OSError as e:
                return type(e).__name__
        out = {{p: read(p) for p in {paths!r}}}
        """,
    )
    leaked = {p: r for p, r in out.items() if r.startswith(("READ", "LISTED"))}
    assert not leaked, leaked


async def test_writes_outside_the_work_dir_fail(srv) -> None:
    other = srv.state.registry.work_dir_for("t1", BYSTANDER)
    targets = [
        "/etc/evil",
        "/usr/evil",
        "/evil",
        "/mnt/evil",
        f"../{BYSTANDER}/evil.txt",
        str(other / "evil.txt"),
        str(srv.settings.data_dir / "evil.txt"),
    ]
    out = await probe(
        srv,
        f"""
        def write(path):
            with open(path, "w") as f:
                f.write("x")
        out = {{t: try_(write, t) for t in {targets!r}}}
        """,
    )
    assert "OK" not in out.values(), out
    assert not (other / "evil.txt").exists() and not (srv.settings.data_dir / "evil.txt").exists()


# -- privileges, processes -------------------------------------------------------------


async def test_no_privilege_escalation(srv) -> None:
    out = await probe(
        srv,
        f"""
        import ctypes, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        def call(fn, *args):
            if fn(*args) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        out["setuid"] = try_(os.setuid, 0)
        out["unshare_user"] = try_(call, libc.unshare, 0x10000000)  # CLONE_NEWUSER
        out["unshare_net"] = try_(call, libc.unshare, 0x40000000)  # CLONE_NEWNET
        cmd = subprocess.run(["unshare", "-U", "true"], capture_output=True)
        out["unshare_cmd"] = cmd.returncode
        out["ptrace_init"] = try_(call, libc.ptrace, 16, 1, 0, 0)  # PTRACE_ATTACH
        out["ptrace_server"] = try_(call, libc.ptrace, 16, {os.getpid()}, 0, 0)
        out["mount"] = try_(call, libc.mount, b"none", b"/mnt/data", b"tmpfs", 0, None)
        """,
    )
    assert out.pop("unshare_cmd") != 0
    assert "OK" not in out.values(), out


async def test_signals_cannot_reach_the_server_which_is_not_even_visible(srv) -> None:
    out = await probe(
        srv,
        f"""
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        out["cmdlines"] = [open(f"/proc/{{p}}/cmdline", "rb").read().decode(errors="replace")
                           for p in pids]
        out["kill_server"] = try_(os.kill, {os.getpid()}, 9)
        out["kill_server_group"] = try_(os.killpg, {os.getpgrp()}, 9)
        """,
    )
    assert "pytest" not in " ".join(out["cmdlines"]) and len(out["cmdlines"]) <= 4, out
    assert out["kill_server"] == out["kill_server_group"] == "ProcessLookupError", out


async def test_killing_the_kernels_parent_or_everything_hurts_only_itself(srv) -> None:
    await run(srv, "kept = 'state'")
    out = await probe(
        srv,
        """
        out["ppid"] = os.getppid()
        os.kill(os.getppid(), 9)  # the sandbox's init: signals from inside are ignored
        os.kill(1, 9)
        """,
    )
    assert out["ppid"] == 1
    r = await run(srv, "kept")
    assert r["result"] == {"text/plain": "'state'"} and r["kernel_restarted"] is False
    # kill(-1) signals every process it can see but itself and init: there are none.
    out = await probe(srv, "out['kill_all'] = try_(os.kill, -1, 9)")
    assert out["kill_all"] in ("OK", "ProcessLookupError"), out
    r = await run(srv, "kept")
    assert r["result"] == {"text/plain": "'state'"}, r


async def test_the_kernel_cannot_swap_the_sockets_the_server_connects_to(srv) -> None:
    # Its runtime dir is sealed once its sockets are bound: a swapped socket could otherwise
    # have ZMQ reconnect the server to another unix socket on the host.
    code = """
        import os, ipykernel
        d = os.path.dirname(ipykernel.get_connection_file())
        out = []
        for attempt in (lambda: os.rename(os.path.join(d, "s-1"), os.path.join(d, "x")),
                        lambda: os.symlink("/run", os.path.join(d, "evil"))):
            try:
                attempt(); out.append("allowed")
            except PermissionError:
                out.append("denied")
        out
    """
    r = await run(srv, code)
    assert r["result"] == {"text/plain": "['denied', 'denied']"}, r
    assert (await run(srv, "1 + 1"))["status"] == "ok"
