"""`python -m server` as a child process, for the tests that stop, kill or restart it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from tests.client import Api
from tests.conftest import KEY, free_port
from tests.polling import until


async def wait_healthy(api: Api, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until the server answers /api/health (failing at once if it exits)."""

    async def healthy() -> bool:
        assert proc.poll() is None, "server exited early"
        try:
            return (await api.call("GET", "/api/health", key=None, timeout=2)).status == 200
        except OSError:
            return False

    await until(healthy, timeout, interval=0.1)


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
