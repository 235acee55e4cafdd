"""The sandbox, attacked from inside real sandboxed kernels (kernels/sandbox/launcher.py).

Every test runs bubblewrap for real. Without it (or without user namespaces) each test
FAILS with the reason; set KSS_TEST_ALLOW_NO_SANDBOX=1 to skip them instead (only for
machines that will never run kernels sandboxed). Kernels use uids 2090000-2090099 so a
server or another suite on the same machine (default 2000000-) is never disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from kernels.launcher import LocalLauncher
from kernels.sandbox import (
    SandboxLauncher,
    SandboxPolicy,
    check_sandbox_available,
    cleanup_leftovers,
    make_launcher,
    mounts,
    state_dir,
)
from tests.conftest import require_sandbox as sandbox_or_fail
from tests.conftest import sandbox_only_module
from tests.kernels.sandbox.kernel_client import RunningKernel, start_kernel
from tests.polling import until

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[3]
POLICY = SandboxPolicy(
    uid_first=2_090_000,
    uid_last=2_090_099,
    memory_bytes=512 << 20,
    pids_max=64,
    cpus=0.5,
    file_size_bytes=10_000_000,
    tmp_bytes=64 << 20,
)
POLICY_UIDS = range(POLICY.uid_first, POLICY.uid_last + 1)
UNAVAILABLE = sandbox_only_module()


def require_sandbox() -> None:
    sandbox_or_fail(UNAVAILABLE)
    if os.geteuid() != 0:
        pytest.fail("run this suite as root: it tests per-kernel uids (user mode has its own test)")


@pytest.fixture(scope="module")
def host_dirs() -> Iterator[dict[str, Path]]:
    """A runtime root kernel uids can traverse, and host dirs kernels must not see."""
    require_sandbox()
    base = Path(tempfile.mkdtemp(prefix="kss-sbx-"))
    os.chmod(base, 0o711)
    dirs = {name: base / name for name in ("run", "work-a", "work-b", "outside")}
    for d in dirs.values():
        d.mkdir()
    (dirs["work-a"] / "input.csv").write_text("x,y\n1,2\n")
    (dirs["work-b"] / "secret-b.txt").write_text("user b")
    (dirs["outside"] / "data.txt").write_text("host data")
    os.chmod(dirs["outside"], 0o755)
    os.chmod(dirs["outside"] / "data.txt", 0o644)  # world-readable on the host on purpose
    dirs["base"] = base
    yield dirs
    assert not mounts.mounts_under(base), "a test left a mount behind"
    shutil.rmtree(base)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def launcher(host_dirs: dict[str, Path]) -> AsyncIterator[SandboxLauncher]:
    await cleanup_leftovers(host_dirs["run"], POLICY)
    made = make_launcher(sandbox=True, runtime_root=host_dirs["run"], policy=POLICY)
    assert isinstance(made, SandboxLauncher)
    yield made
    assert made.uids is not None and made.uids.in_use == 0, "a kernel was not released"
    await cleanup_leftovers(host_dirs["run"], POLICY)  # as the server does on shutdown


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe(
    launcher: SandboxLauncher, host_dirs: dict[str, Path]
) -> AsyncIterator[RunningKernel]:
    """One warm kernel, claimed for user a, shared by the non-destructive probes."""
    os.environ["KSS_TEST_HOST_SECRET"] = "must-not-leak"
    kernel = await start_kernel(launcher, host_dirs["run"], "probe")
    try:
        path = await launcher.claim(kernel.slot, host_dirs["work-a"])
        assert path == "/mnt/data"
        res = await kernel.execute(f"import os; os.chdir({path!r})")
        assert res.status == "ok", res
        yield kernel
    finally:
        del os.environ["KSS_TEST_HOST_SECRET"]
        await kernel.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def victim(
    launcher: SandboxLauncher, host_dirs: dict[str, Path]
) -> AsyncIterator[RunningKernel]:
    """A kernel of its own for attacks that kill it."""
    kernel = await start_kernel(launcher, host_dirs["run"], "victim")
    try:
        await launcher.claim(kernel.slot, host_dirs["work-b"])
        yield kernel
    finally:
        await kernel.stop()


async def check(kernel: RunningKernel, code: str) -> dict:
    """Run `code` (which sets `out`, a JSON-able dict) and return `out`."""
    wrapped = "import json\nout = {}\n" + textwrap.dedent(code) + "\nprint(json.dumps(out))"
    res = await kernel.execute(wrapped)
    assert res.status == "ok", res
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- identity, files, environment ---------------------------------------------------------


async def test_kernel_runs_as_own_uid_in_work_dir(probe: RunningKernel, host_dirs: dict) -> None:
    out = await check(
        probe,
        """
        import socket
        out["uid"], out["gid"], out["groups"] = os.getuid(), os.getgid(), os.getgroups()
        out["cwd"], out["files"] = os.getcwd(), sorted(os.listdir("."))
        out["ppid"], out["host"] = os.getppid(), socket.gethostname()
        out["env"] = dict(os.environ)
        out["caps"] = [l for l in open("/proc/self/status") if l.startswith(("CapEff", "Seccomp:"))]
        with open("result.txt", "w") as f:
            f.write("made in the sandbox")
        """,
    )
    assert out["uid"] in POLICY_UIDS and out["gid"] == out["uid"]
    assert out["groups"] in ([], [out["uid"]])
    assert out["cwd"] == "/mnt/data" and out["files"] == ["input.csv"]
    assert out["ppid"] == 1 and out["host"] == "sandbox"
    assert "KSS_TEST_HOST_SECRET" not in out["env"]
    assert out["env"]["HOME"] == "/tmp/home"
    assert out["env"]["OPENBLAS_NUM_THREADS"] == out["env"]["OMP_NUM_THREADS"] == "1"  # 1 core
    assert out["caps"] == ["CapEff:\t0000000000000000\n", "Seccomp:\t2\n"]
    made = host_dirs["work-a"] / "result.txt"
    assert made.read_text() == "made in the sandbox"
    assert made.stat().st_uid == out["uid"]


async def test_connection_file_private_to_kernel_uid(probe: RunningKernel) -> None:
    uid = await probe.value("os.getuid()")
    st = probe.slot.connection_file.stat()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (int(uid), "0o600")
    assert oct(probe.slot.runtime_dir.stat().st_mode & 0o777) == "0o700"


async def test_host_files_invisible(probe: RunningKernel, host_dirs: dict) -> None:
    out = await check(
        probe,
        f"""
        def probe(path):
            try:
                with open(path) as f:
                    return "READ:" + f.read(20)
            except OSError as e:
                return type(e).__name__
        paths = ["/etc/shadow", "/root/.bashrc", "/home", {str(REPO / "pyproject.toml")!r},
                 {str(host_dirs["work-b"] / "secret-b.txt")!r},
                 {str(host_dirs["outside"] / "data.txt")!r},
                 "/var/run/docker.sock", "/run/systemd/private", "/proc/1/environ"]
        out["read"] = {{p: probe(p) for p in paths}}
        out["root"] = sorted(os.listdir("/"))
        out["etc"] = sorted(os.listdir("/etc"))
        out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        out["executable"] = __import__("sys").executable
        """,
    )
    assert all(not r.startswith("READ") for p, r in out["read"].items() if p != "/proc/1/environ")
    assert set(out["root"]) <= {
        "bin",
        "dev",
        "etc",
        "lib",
        "lib64",
        "mnt",
        "proc",
        "run",
        "sbin",
        "tmp",
        "opt",
        "usr",
    }
    assert out["executable"] == "/opt/kernel/env/bin/python"  # no host path shows through
    assert "shadow" not in out["etc"] and "passwd" in out["etc"]
    assert len(out["pids"]) <= 4, out["pids"]  # bwrap's init, the kernel, its children


async def test_nothing_the_kernel_reads_names_a_host_path(
    probe: RunningKernel, host_dirs: dict, launcher: SandboxLauncher
) -> None:
    """bubblewrap's arguments, the kernel's command line and environment, its connection
    file and its mount table name only the fixed paths inside the sandbox."""
    out = await check(
        probe,
        """
        def read(path):
            with open(path, "rb") as f:
                return f.read().replace(b"\\0", b" ").decode(errors="replace")
        texts = {p: read(p) for p in ["/proc/1/cmdline", "/proc/self/cmdline",
                 "/proc/self/environ", "/proc/self/mountinfo", "/proc/self/cgroup"]}
        texts["conn"] = read(__import__("sys").argv[__import__("sys").argv.index("-f") + 1])
        import glob
        texts["venv"] = " ".join(read(f) for f in glob.glob(__import__("sys").prefix + "/bin/*")
                                 if not os.path.islink(f) and os.path.getsize(f) < 100_000)
        out["texts"] = texts
        """,
    )
    venv = Path(launcher.command.python).parent.parent
    if venv.resolve().is_relative_to(REPO.resolve()):
        pytest.fail(f"the kernel venv {venv.resolve()} is inside the checkout: make deps")
    server_dirs = [str(launcher.runtime_root), str(launcher.state), str(host_dirs["work-a"])]
    for where, text in out["texts"].items():
        assert str(REPO) not in text, f"{where} names the checkout: {text[:3000]}"
        if where == "/proc/self/mountinfo":
            continue  # a bind mount shows its source: opaque runtime and slot dirs only
        for path in server_dirs:
            assert path not in text, f"{where} names the host path {path}: {text[:3000]}"
    assert out["texts"]["/proc/1/cmdline"].startswith("/usr/bin/bwrap --args ")


async def test_writes_outside_work_dir_fail(probe: RunningKernel) -> None:
    out = await check(
        probe,
        f"""
        import sys
        targets = ["/usr/evil", "/etc/evil", "/evil", "/mnt/evil", sys.prefix + "/evil",
                   "/opt/kernel/startup/evil.py", {str(REPO / "kernels/startup/evil.py")!r},
                   "/proc/sys/kernel/hostname"]
        out["errors"] = {{}}
        for t in targets:
            try:
                with open(t, "w") as f:
                    f.write("x")
                out["errors"][t] = None
            except OSError as e:
                out["errors"][t] = type(e).__name__
        """,
    )
    assert all(out["errors"].values()), out


async def test_matplotlib_uses_prebuilt_font_cache(probe: RunningKernel) -> None:
    out = await check(
        probe,
        """
        import time, matplotlib
        t = time.monotonic()
        import matplotlib.pyplot as plt
        plt.figure(); plt.plot([1, 2]); plt.savefig("/tmp/plot.png")
        out["seconds"], out["cachedir"] = time.monotonic() - t, matplotlib.get_cachedir()
        """,
    )
    assert out["cachedir"] == "/tmp/mpl"
    assert out["seconds"] < 5, out
    assert "font cache" not in probe.slot.log_file.read_text()


# -- network, privileges, other processes --------------------------------------------------


async def test_no_network(probe: RunningKernel) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        out = await check(
            probe,
            f"""
            import socket
            def attempt(addr):
                try:
                    socket.create_connection(addr, timeout=3).close()
                    return "CONNECTED"
                except OSError as e:
                    return type(e).__name__
            out["loopback"] = attempt(("127.0.0.1", {port}))
            out["public"] = attempt(("192.0.2.1", 80))  # TEST-NET-1: unroutable even if leaked
            try:
                socket.getaddrinfo("example.com", 443)
                out["dns"] = "RESOLVED"
            except OSError as e:
                out["dns"] = type(e).__name__
            out["ifaces"] = [name for _i, name in socket.if_nameindex()]
            """,
        )
    finally:
        server.close()
    assert out["loopback"] != "CONNECTED" and out["public"] != "CONNECTED"
    assert out["dns"] != "RESOLVED"
    assert out["ifaces"] == ["lo"]


async def test_no_privilege_escalation(probe: RunningKernel) -> None:
    out = await check(
        probe,
        """
        import ctypes, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        def call(fn, *args):
            r = fn(*args)
            return "OK" if r == 0 else os.strerror(ctypes.get_errno())
        try:
            os.setuid(0)
            out["setuid"] = "OK"
        except OSError as e:
            out["setuid"] = type(e).__name__
        out["unshare_user"] = call(libc.unshare, 0x10000000)
        out["unshare_net"] = call(libc.unshare, 0x40000000)
        cmd = subprocess.run(["unshare", "-U", "true"], capture_output=True)
        out["unshare_cmd"] = cmd.returncode
        out["ptrace_init"] = call(libc.ptrace, 16, 1, 0, 0)  # PTRACE_ATTACH
        out["mount"] = call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None)
        """,
    )
    assert out["setuid"] in ("PermissionError", "OSError")  # EINVAL: uid 0 is not mapped
    assert "OK" not in (out["unshare_user"], out["unshare_net"], out["ptrace_init"], out["mount"])
    assert out["unshare_cmd"] != 0


async def test_signals_cannot_leave_the_sandbox(probe: RunningKernel) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])  # noqa: ASYNC220 (a bystander on the host)
    try:
        out = await check(
            probe,
            f"""
            import signal
            try:
                os.kill({sleeper.pid}, signal.SIGKILL)
                out["host"] = "SENT"
            except OSError as e:
                out["host"] = type(e).__name__
            os.kill(1, signal.SIGKILL)  # our parent, the sandbox's init: ignored
            """,
        )
        assert out["host"] == "ProcessLookupError"
        assert sleeper.poll() is None
        assert await probe.value("'alive'") == "alive"
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_interrupt_in_message_mode(probe: RunningKernel, host_dirs: dict) -> None:
    started = host_dirs["work-a"] / "sleeping"  # the code says when it runs (/mnt/data)
    code = "open('sleeping', 'w').close()\nimport time; time.sleep(30)"
    msg_id_task = asyncio.ensure_future(probe.execute(code, timeout=20))
    try:
        await until(started.exists)  # sent earlier, an interrupt would hit an idle kernel
        probe.client.control_channel.send(probe.client.session.msg("interrupt_request", {}))
        res = await msg_id_task
    finally:
        started.unlink(missing_ok=True)
    assert res.status == "error" and res.error is not None and "KeyboardInterrupt" in res.error


# -- resource limits ---------------------------------------------------------------------


async def test_huge_allocation_is_memory_error(probe: RunningKernel) -> None:
    res = await probe.execute("x = bytearray(10**11)")
    assert res.status == "error" and res.error is not None and res.error.startswith("MemoryError")
    assert await probe.value("'alive'") == "alive"


async def test_fork_bomb_contained_by_pids_limit(probe: RunningKernel) -> None:
    out = await check(
        probe,
        """
        import time, signal
        children = []
        try:
            for _ in range(1000):
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
        except OSError as e:
            out["error"] = type(e).__name__
        out["forked"] = len(children)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        """,
    )
    assert out["error"] == "BlockingIOError" and out["forked"] < POLICY.pids_max, out


async def test_tmp_is_size_limited(probe: RunningKernel) -> None:
    out = await check(
        probe,
        f"""
        import glob
        chunk, written = b"x" * (1 << 20), 0
        try:
            for i in range({(POLICY.tmp_bytes >> 20) + 64}):  # 1 MiB files: under the fsize limit
                with open(f"/tmp/fill{{i}}", "wb") as f:
                    f.write(chunk)
                written += len(chunk)
        except OSError as e:
            out["error"] = os.strerror(e.errno)
        out["written"] = written
        for name in glob.glob("/tmp/fill*"):
            os.remove(name)
        """,
    )
    assert out["error"] == os.strerror(28) and out["written"] <= POLICY.tmp_bytes, out


async def test_file_size_limit(probe: RunningKernel, host_dirs: dict) -> None:
    out = await check(
        probe,
        f"""
        try:
            with open("big.bin", "wb") as f:
                f.write(b"x" * {POLICY.file_size_bytes + 1_000_000})
            out["error"] = None
        except OSError as e:
            out["error"] = os.strerror(e.errno)
        """,
    )
    assert out["error"] == os.strerror(27)  # EFBIG: "File too large"
    big = host_dirs["work-a"] / "big.bin"
    assert big.stat().st_size <= POLICY.file_size_bytes
    big.unlink()


async def test_memory_growth_stops_at_cgroup_limit(victim: RunningKernel, launcher) -> None:
    res = await victim.execute(
        "chunks = []\nwhile True:\n    chunks.append(b'x' * 10**7)", timeout=60
    )
    if res.status == "dead":
        assert launcher.oom_killed(victim.slot)
    else:
        assert res.error is not None and res.error.startswith("MemoryError"), res
    cgroup = launcher._kernels[victim.slot.kernel_id].cgroup
    assert cgroup is not None
    peak = cgroup.memory_peak()
    assert peak is not None and peak <= POLICY.memory_bytes


async def test_cpu_quota_holds_a_busy_loop_back(probe: RunningKernel, launcher) -> None:
    before = launcher.cpu_throttled(probe.slot)
    out = await check(
        probe,
        """
        import time
        wall, cpu = time.monotonic(), time.process_time()
        while time.monotonic() - wall < 1.5:
            pass
        out["wall"], out["cpu"] = time.monotonic() - wall, time.process_time() - cpu
        """,
    )
    # Unlimited, a busy loop gets a whole core (cpu == wall); the quota is half a core.
    assert out["cpu"] < 0.75 * out["wall"], out
    assert launcher.cpu_throttled(probe.slot) > before


async def test_a_kernels_cpu_share_follows_its_priority(probe: RunningKernel, launcher) -> None:
    """A sandboxed kernel is a cpu cgroup of its own, scheduled as one against the others:
    its priority must be the group's weight, not only its processes' nice."""
    cgroup = launcher._kernels[probe.slot.kernel_id].cgroup
    assert cgroup is not None and "cpu" in cgroup.paths
    path, version = cgroup.paths["cpu"]
    share = path / ("cpu.weight" if version == 2 else "cpu.shares")
    try:
        launcher.prioritize(probe.slot, 19)  # a spare
        assert int(share.read_text()) == (1 if version == 2 else 15)
        launcher.prioritize(probe.slot, -5)
        assert int(share.read_text()) == (305 if version == 2 else 3121)
    finally:
        launcher.prioritize(probe.slot, 0)  # a session
    assert int(share.read_text()) == (100 if version == 2 else 1024)


async def test_kill_all_reaches_only_own_sandbox(
    victim: RunningKernel, probe: RunningKernel
) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])  # noqa: ASYNC220 (a bystander on the host)
    try:
        code = "import os, signal, time\nif os.fork() == 0: time.sleep(60)\nos.kill(-1, 9)"
        res = await victim.execute(code, timeout=20)
        assert res.status == "ok", res  # it killed its own child, and nothing else:
        assert sleeper.poll() is None
        assert await probe.value("'alive'") == "alive"
    finally:
        sleeper.kill()
        sleeper.wait()


# -- lifecycle ---------------------------------------------------------------------------


async def test_two_kernels_have_distinct_uids_and_release_cleans(
    launcher: SandboxLauncher, probe: RunningKernel, victim: RunningKernel
) -> None:
    a, b = (
        int(await probe.value("os.getuid()")),
        int(await victim.value("__import__('os').getuid()")),
    )
    assert a != b and {a, b} <= set(POLICY_UIDS)
    kernel = launcher._kernels[victim.slot.kernel_id]
    assert kernel.cgroup is not None
    groups = [path for path, _v in kernel.cgroup.paths.values()]
    assert str(kernel.slot_dir) in mounts.mounts_under(kernel.slot_dir)
    await victim.stop()
    assert not kernel.slot_dir.exists() and not any(g.exists() for g in groups)
    assert not mounts.mounts_under(kernel.slot_dir)


async def test_cleanup_after_crash(host_dirs: dict) -> None:
    root = host_dirs["base"] / "crashed"
    crashed = make_launcher(sandbox=True, runtime_root=root, policy=POLICY)
    assert isinstance(crashed, SandboxLauncher)
    kernel = await start_kernel(crashed, root, "lost")
    await crashed.claim(kernel.slot, host_dirs["base"] / "work-lost")
    kernel.client.stop_channels()
    record = crashed._kernels["lost"]
    assert record.cgroup is not None
    groups = [path for path, _v in record.cgroup.paths.values()]
    # The server "crashes": nothing is released. (Its kernel would die with it; this one
    # is left running to prove cleanup kills it.)
    await cleanup_leftovers(root, POLICY)
    await asyncio.wait_for(kernel.process.wait(), 10)
    assert not mounts.mounts_under(root) and not any(g.exists() for g in groups)
    assert not state_dir(root).exists()
    assert crashed.uids is not None
    crashed.uids.release(record.uid)


async def test_check_and_no_sandbox_mode(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    require_sandbox()
    assert check_sandbox_available() is None
    with caplog.at_level(logging.WARNING):
        local = make_launcher(sandbox=False, runtime_root=tmp_path)
    assert isinstance(local, LocalLauncher) and "SANDBOX DISABLED" in caplog.text


USER_MODE_SCRIPT = """
import asyncio, json, os, socket, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from kernels.sandbox import make_launcher, cleanup_leftovers
from tests.kernels.sandbox.kernel_client import start_kernel

async def main():
    root, work = Path(sys.argv[2]), Path(sys.argv[3])
    await cleanup_leftovers(root)
    launcher = make_launcher(sandbox=True, runtime_root=root)
    kernel = await start_kernel(launcher, root, "user")
    try:
        path = await launcher.claim(kernel.slot, work)
        res = await kernel.execute(
            f"import os, json, socket\\nos.chdir({path!r})\\nopen('new.txt', 'w').write('x')\\n"
            "print(json.dumps([os.getuid(), os.getcwd(), sorted(os.listdir('.')), "
            "os.path.exists('/etc/shadow'), [n for _i, n in socket.if_nameindex()], os.getppid()]))"
        )
        print(json.dumps({"mode": launcher.mode, "res": res.stdout, "err": res.error}))
    finally:
        await kernel.stop()

asyncio.run(main())
"""


async def test_user_mode_without_root(host_dirs: dict) -> None:
    """As an ordinary user (nobody): same isolation except the uid, and claim still works."""
    require_sandbox()
    base = host_dirs["base"] / "usermode"
    work = base / "work"
    work.mkdir(parents=True)
    (work / "in.txt").write_text("hi")
    shutil.chown(base, 65534, 65534)
    shutil.chown(work, 65534, 65534)
    shutil.chown(work / "in.txt", 65534, 65534)
    python = REPO / ".kernel-venv" / "bin" / "python"  # readable by nobody, has jupyter_client
    argv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        str(python),
        "-c",
        USER_MODE_SCRIPT,
        str(REPO),
        str(base / "run"),
        str(work),
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    try:
        async with asyncio.timeout(60):
            stdout, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-3000:]
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report["mode"] == "userns" and report["err"] is None, report
    uid, cwd, files, shadow, ifaces, ppid = json.loads(report["res"])
    assert (uid, cwd, files, shadow, ifaces, ppid) == (
        65534,
        "/mnt/data",
        ["in.txt", "new.txt"],
        False,
        ["lo"],
        1,
    )
    assert (work / "new.txt").stat().st_uid == 65534
