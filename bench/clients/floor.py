"""The floor: a kernel driven straight over ZMQ by jupyter_client, with no server between."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

import zmq
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from bench.clients.base import ExecResult, Session, timed
from bench.clients.jupyter_ws import apply_message
from bench.config import BenchConfig
from bench.kernelspec import KERNEL_NAME, write_kernelspec
from bench.procs import kernel_procs, kill_procs, rss_bytes

log = logging.getLogger(__name__)


class FloorSession:
    """One kernel manager + async client; executions run one at a time."""

    def __init__(self, km: AsyncKernelManager, registry: set[FloorSession]) -> None:
        self.km = km
        self.kc = km.client()
        self.registry = registry
        self.pid: int | None = getattr(km.provisioner, "pid", None)
        self._lock = asyncio.Lock()
        registry.add(self)

    async def connect(self, timeout_s: float) -> None:
        """Ready once kernel_info is answered on shell and iopub delivers to us.

        jupyter_client's `wait_for_ready` also waits for 0.2 s of iopub silence, which would
        put 200 ms into the floor that no kernel needs; this is the prompt form of the check.
        """
        self.kc.start_channels()
        # A send to a kernel that died at start (20 starting at once can race for a port)
        # would block the event loop once the queue is full: fail it instead.
        self.kc.shell_channel.socket.setsockopt(zmq.SNDTIMEO, 1000)
        end = time.monotonic() + timeout_s
        msg_id = self.kc.kernel_info()
        while time.monotonic() < end:
            try:
                reply = await self.kc.get_shell_msg(timeout=1.0)
            except Empty:
                if not await self.km.is_alive():
                    raise RuntimeError("the kernel died while starting") from None
                msg_id = self.kc.kernel_info()  # the kernel may not have bound yet
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        # iopub is a PUB/SUB pair: until our subscription reaches the kernel, its messages are
        # dropped. One message from iopub proves the subscription is live.
        while time.monotonic() < end:
            try:
                await self.kc.get_iopub_msg(timeout=0.05)
                return
            except Empty:
                if not await self.km.is_alive():
                    raise RuntimeError("the kernel died while starting") from None
                self.kc.kernel_info()
        raise TimeoutError(f"kernel not ready in {timeout_s:.0f} s")

    async def execute(self, code: str, timeout_s: float) -> ExecResult:
        async with self._lock:
            return await timed(lambda result: self._run(code, result, timeout_s), timeout_s)

    async def _run(self, code: str, result: ExecResult, timeout_s: float) -> None:
        msg_id = self.kc.execute(code)
        idle = False
        while not idle:
            msg = await self.kc.get_iopub_msg(timeout=timeout_s)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            result.messages += 1
            _, idle = apply_message(msg, result)
        while True:
            reply = await self.kc.get_shell_msg(timeout=timeout_s)
            if reply["parent_header"].get("msg_id") == msg_id:
                apply_message(reply, result)
                return

    async def close(self) -> None:
        if self not in self.registry:
            return
        self.registry.discard(self)
        self.kc.stop_channels()
        try:
            async with asyncio.timeout(10):
                await self.km.shutdown_kernel(now=True)
        except Exception as exc:  # a kernel that will not stop must not stop the run
            log.warning("floor kernel did not shut down (%r); killing it", exc)
            kill_procs([p for p in kernel_procs(os.getpid()) if p.pid == self.pid])


class FloorSystem:
    """No server: the scenarios talk to jupyter_client kernels in this process."""

    name = "floor"
    label = "ZMQ floor"

    def __init__(self, cfg: BenchConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir / "floor"
        self.ksm: KernelSpecManager | None = None
        self.sessions: set[FloorSession] = set()

    def settings(self) -> dict[str, Any]:
        return {"client": "jupyter_client AsyncKernelManager over ZMQ tcp", "kernel": KERNEL_NAME}

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        kernels_dir = write_kernelspec(self.workdir / "share", self.cfg.kernel_python)
        self.ksm = KernelSpecManager(kernel_dirs=[str(kernels_dir)])

    async def stop(self) -> None:
        pids = {session.pid for session in self.sessions}
        for session in list(self.sessions):
            await session.close()
        leftovers = [proc for proc in kernel_procs(os.getpid()) if proc.pid in pids]
        if leftovers:
            log.warning("floor left %d kernels running; stopping them", len(leftovers))
            kill_procs(leftovers)

    async def open_session(self, user: str) -> Session:
        km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=self.ksm)
        km.connection_file = str(self.workdir / f"kernel-{uuid.uuid4().hex}.json")
        # A local log file opens at once; the kernel keeps its own copy of the descriptor.
        with open(self.workdir / "kernels.log", "ab") as out:  # noqa: ASYNC230
            await km.start_kernel(stdout=out, stderr=subprocess.STDOUT)
        session = FloorSession(km, self.sessions)
        try:
            await session.connect(self.cfg.exec_timeout_s)
        except BaseException:
            await session.close()
            raise
        return session

    async def open_plain_session(self, user: str) -> Session:
        """A kernel driven by jupyter_client's own `execute_interactive` (S2's second row)."""
        from bench.clients.plain import InteractiveSession

        session = await self.open_session(user)
        assert isinstance(session, FloorSession)
        return InteractiveSession(session.kc, session.close)

    def memory(self) -> tuple[int | None, list[int]]:
        kernels = [rss_bytes(s.pid) for s in self.sessions if s.pid is not None]
        return None, [rss for rss in kernels if rss is not None]
