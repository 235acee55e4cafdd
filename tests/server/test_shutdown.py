"""`python -m server` as a process: SIGTERM/SIGINT stop every kernel it started, only those."""

import asyncio
import signal

import psutil
import pytest

from kernels.kernel import Kernel
from kernels.launcher import KernelCommand, LocalLauncher, default_kernel_python
from tests.server.server_process import start_server_process


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
