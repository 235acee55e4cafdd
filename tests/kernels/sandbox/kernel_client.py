"""Test helper: start a kernel through a launcher and drive it with AsyncKernelClient.

Drives a sandboxed kernel without the session layer: writes an ipc connection file
into a `KernelSlot`, starts the launcher, runs code and collects iopub output until idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file

from kernels.launcher import KernelSlot, Launcher, ensure_private_dir


@dataclass
class Result:
    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    error: str | None = None  # "ename: evalue"
    status: str = "ok"  # ok, error, dead, timeout


@dataclass
class RunningKernel:
    launcher: Launcher
    slot: KernelSlot
    process: asyncio.subprocess.Process
    client: AsyncKernelClient
    started: float = field(default_factory=time.monotonic)

    async def execute(self, code: str, timeout: float = 30.0) -> Result:
        """Run `code`; read iopub until idle, or report the kernel's death or a timeout."""
        out = Result()
        msg_id = self.client.execute(code)
        died = asyncio.ensure_future(self.process.wait())
        try:
            async with asyncio.timeout(timeout):
                while True:
                    get = asyncio.ensure_future(self.client.get_iopub_msg())
                    done, _ = await asyncio.wait({get, died}, return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                        out.status = "dead"
                        return out
                    msg = get.result()
                    if msg["parent_header"].get("msg_id") != msg_id:
                        continue
                    kind, content = msg["msg_type"], msg["content"]
                    if kind == "stream":
                        if content["name"] == "stdout":
                            out.stdout += content["text"]
                        else:
                            out.stderr += content["text"]
                    elif kind == "execute_result":
                        out.result = content["data"].get("text/plain")
                    elif kind == "error":
                        out.error = f"{content['ename']}: {content['evalue']}"
                        out.status = "error"
                    elif kind == "status" and content["execution_state"] == "idle":
                        return out
        except TimeoutError:
            out.status = "timeout"
            return out
        finally:
            if not died.done():
                died.cancel()

    async def value(self, expr: str) -> str:
        """The printed value of `expr`, failing loudly if it raised."""
        res = await self.execute(f"print({expr})")
        assert res.status == "ok", res
        return res.stdout.strip()

    async def stop(self) -> None:
        self.client.stop_channels()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.process.wait()
        await self.launcher.release(self.slot)


def make_slot(
    runtime_root: Path, kernel_id: str, view: str | None = None
) -> tuple[KernelSlot, dict]:
    """A slot whose connection file names the sockets where the kernel sees them (`view`),
    and the connection info with the host's paths, for our client."""
    runtime_dir = ensure_private_dir(runtime_root / kernel_id)
    connection_file = runtime_dir / "kernel.json"
    ipc_prefix = str(runtime_dir / "k")
    inside = f"{view}/k" if view else ipc_prefix
    _, info = write_connection_file(str(connection_file), ip=inside, transport="ipc")
    return KernelSlot(kernel_id, runtime_dir, connection_file, ipc_prefix), {
        **info,
        "ip": ipc_prefix,
    }


async def start_kernel(launcher: Launcher, runtime_root: Path, kernel_id: str) -> RunningKernel:
    """Start and wait for a kernel; on failure, kill and release it before raising."""
    slot, host_info = make_slot(runtime_root, kernel_id, launcher.runtime_view)
    started = time.monotonic()
    process = await launcher.start(slot)
    client = AsyncKernelClient()
    client.load_connection_info(host_info)
    client.start_channels(hb=False)
    kernel = RunningKernel(launcher, slot, process, client, started)
    try:
        ready = asyncio.ensure_future(client.wait_for_ready(timeout=60))
        died = asyncio.ensure_future(process.wait())
        await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            log = slot.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"kernel exited with {process.returncode} before ready:\n{log}")
        died.cancel()
        ready.result()
    except BaseException:
        await kernel.stop()
        raise
    return kernel
