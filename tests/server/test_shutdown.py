"""`python -m server` as a process: SIGTERM/SIGINT stop every kernel it started, only those."""

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import psutil
import pytest

from kernels.kernel import Kernel
from kernels.launcher import KernelCommand, LocalLauncher, default_kernel_python
from tests.client import Api
from tests.conftest import KEY, free_port


async def wait_healthy(api: Api, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited early"
        try:
            if (await api.call("GET", "/api/health", key=None, timeout=2)).status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("server did not become healthy")


async def start_server_process(
    data_dir, pool_size: int, output: bool = False, args: Sequence[str] = ("--no-sandbox",)
) -> tuple[subprocess.Popen, Api]:
    """`python -m server` as a child process (unsandboxed unless `args` say otherwise), once
    it answers /api/health."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "server",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--api-key",
        f"t1={KEY}",
        "--pool-size",
        str(pool_size),
        *args,
    ]
    out = subprocess.PIPE if output else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    api = Api(f"http://127.0.0.1:{port}", KEY)
    try:
        await wait_healthy(api, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, api


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_every_kernel_and_nothing_else(tmp_path, sig):
    outsider = await Kernel.start(
        LocalLauncher(KernelCommand(default_kernel_python())), tmp_path / "outside"
    )
    proc, api = await start_server_process(tmp_path / "d", pool_size=2, output=True)
    try:
        for user in ("a", "b"):
            assert (await api.execute(user, "1"))["status"] == "ok"
        kernels = psutil.Process(proc.pid).children(recursive=True)
        assert len(kernels) >= 3  # two sessions and at least one warm spare
        proc.send_signal(sig)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        _, alive = psutil.wait_procs(kernels, timeout=5)
        assert alive == [], f"orphans: {alive}"
        assert outsider.alive  # a kernel this server did not start is untouched
        output = proc.stdout.read().decode()
        assert "stopped" in output and "Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        await outsider.stop()
