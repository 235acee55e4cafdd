"""`python -m server` as a process: SIGTERM/SIGINT stop every kernel it started, only those."""

import asyncio
import signal
import subprocess
import sys
import time

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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_every_kernel_and_nothing_else(tmp_path, sig):
    outsider = await Kernel.start(
        LocalLauncher(KernelCommand(default_kernel_python())), tmp_path / "outside"
    )
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 (the test wants a plain child process)
        [
            sys.executable,
            "-m",
            "server",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "d"),
            "--api-key",
            f"t1={KEY}",
            "--pool-size",
            "2",
            "--no-sandbox",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        api = Api(f"http://127.0.0.1:{port}", KEY)
        await wait_healthy(api, proc)
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
