"""Driving a real `Kernel` (kernels/kernel.py) from a test: start one with the
`LocalLauncher`, run code and wait for all it caused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernels.kernel import Dropped, Kernel, KernelExit
from kernels.launcher import KernelCommand, LocalLauncher, default_kernel_python


def local_launcher() -> LocalLauncher:
    return LocalLauncher(KernelCommand(default_kernel_python()))


async def start_local_kernel(runtime_root: Path, **kw: Any) -> Kernel:
    return await Kernel.start(local_launcher(), runtime_root, **kw)


@dataclass
class Executed:
    msg_id: str
    reply: dict[str, Any] = field(default_factory=dict)  # execute_reply content
    iopub: list[dict[str, Any]] = field(default_factory=list)  # messages, in order
    dropped: list[Dropped] = field(default_factory=list)
    exit: KernelExit | None = None

    @property
    def stdout(self) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.iopub
            if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
        )

    @property
    def result(self) -> str | None:
        for m in self.iopub:
            if m["msg_type"] == "execute_result":
                return m["content"]["data"]["text/plain"]
        return None


async def execute(kernel: Kernel, code: str, timeout: float = 30, **listen: Any) -> Executed:
    """Run `code`; return once its reply and its idle status are in (or the kernel died).
    Stops listening to the request: what comes later is nobody's."""
    msg_id = kernel.execute(code)
    queue = kernel.listen(msg_id, **listen)
    done = Executed(msg_id)
    idle = False
    try:
        async with asyncio.timeout(timeout):
            while not (done.reply and idle):
                item = await queue.get()
                if isinstance(item, KernelExit):
                    done.exit = item
                    break
                if isinstance(item, Dropped):
                    done.dropped.append(item)
                    continue
                channel, msg = item
                if channel == "shell":
                    done.reply = msg["content"]
                elif msg["msg_type"] == "status":
                    idle = msg["content"]["execution_state"] == "idle"
                else:
                    done.iopub.append(msg)
    finally:
        kernel.unlisten(msg_id)
    return done
