"""One running ipykernel process and the client end of its ZMQ channels.

`Kernel` owns the process (started through a `Launcher`), one reader task per channel, and
routes every message by `parent_header.msg_id` to whoever listens for that request. Process
exit is awaited, not polled, so a death reaches listeners at once as a `KernelExit` item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.connect import write_connection_file
from jupyter_client.session import Session

from .errors import KernelStartFailed
from .launcher import KernelSlot, Launcher

log = logging.getLogger(__name__)

CHANNELS = ("shell", "iopub", "control")
REPROBE = 0.05  # seconds between readiness probes once the kernel answers on shell


@dataclass(frozen=True)
class KernelExit:
    """Delivered to listeners when the process is gone; `expected` if we ended it."""

    returncode: int | None
    expected: bool
    oom: bool = False  # the launcher saw its memory limit kill the kernel


Message = dict[str, Any]


class Kernel:
    """A started kernel: send requests, listen for the messages they cause, stop it."""

    def __init__(self, launcher: Launcher, slot: KernelSlot, session: Session) -> None:
        self.launcher = launcher
        self.slot = slot
        self.id = slot.kernel_id
        self.session = session
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = time.time()
        self.exit: KernelExit | None = None
        self._stopping = False
        self._context = zmq.Context.instance()
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self._listeners: dict[str, asyncio.Queue[tuple[str, Message] | KernelExit]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.exited = asyncio.get_running_loop().create_future()

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def start(cls, launcher: Launcher, runtime_root: Path, timeout: float = 60) -> Kernel:
        """Start a kernel and return once its shell and iopub channels both answer."""
        kernel_id = uuid.uuid4().hex
        runtime_dir = runtime_root / kernel_id[:12]
        runtime_dir.mkdir(mode=0o700, parents=True)
        slot = KernelSlot(
            kernel_id=kernel_id,
            runtime_dir=runtime_dir,
            connection_file=runtime_dir / "conn.json",
            ipc_prefix=str(runtime_dir / "s"),
        )
        key = secrets.token_hex(32)
        _, info = write_connection_file(
            str(slot.connection_file),
            ip=slot.ipc_prefix,
            key=key.encode(),
            transport="ipc",
            kernel_name="kss",
        )
        kernel = cls(launcher, slot, Session(key=key.encode(), username="kss"))
        try:
            kernel.process = await launcher.start(slot)
            kernel._connect(info)
            async with asyncio.timeout(timeout):
                await kernel._confirm_ready()
            kernel._seal_runtime_dir()
        except BaseException as exc:
            await kernel.stop(grace=0)
            if isinstance(exc, TimeoutError | OSError | KernelStartFailed):
                raise KernelStartFailed(
                    f"kernel did not start: {exc!r}; log: {kernel.log_tail()}"
                ) from exc
            raise
        log.info("kernel %s started (pid %s)", kernel.id[:12], kernel.pid)
        return kernel

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.exit is None

    def _connect(self, info: dict[str, Any]) -> None:
        prefix = f"ipc://{info['ip']}-"
        kinds = {"shell": zmq.DEALER, "iopub": zmq.SUB, "control": zmq.DEALER}
        for name, kind in kinds.items():
            sock = self._context.socket(kind)
            sock.linger = 0
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            else:
                sock.setsockopt(zmq.IDENTITY, self.session.bsession)
            sock.connect(prefix + str(info[f"{name}_port"]))
            self._sockets[name] = sock
        loop = asyncio.get_running_loop()
        for name, sock in self._sockets.items():
            loop.add_reader(sock.getsockopt(zmq.FD), self._drain, name)
        self._tasks.append(loop.create_task(self._watch_process(), name="kernel-exit"))

    async def _confirm_ready(self) -> None:
        """Send kernel_info until one request has both its reply and its iopub status.

        Every attempt stays listened to: on a loaded machine a kernel may answer an earlier
        request after a later one was sent, and that answer counts. Requests sent before the
        kernel listens are answered when it starts, often before our iopub subscription has
        reached it (their status messages are then lost): once the kernel has answered on
        shell, the next request goes out within `REPROBE` seconds instead of after the
        back-off, which would hold a ready kernel for up to 3 s.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Message] | KernelExit] = asyncio.Queue()
        seen: dict[str, set[str]] = {}
        wait = 0.2
        try:
            while True:
                if self.exit is not None:
                    raise KernelStartFailed(f"kernel exited with code {self.exit.returncode}")
                msg_id = self.send("shell", "kernel_info_request", {})
                seen[msg_id] = set()
                self._listeners[msg_id] = queue
                deadline = loop.time() + wait
                with contextlib.suppress(TimeoutError):
                    while True:
                        async with asyncio.timeout_at(deadline):
                            item = await queue.get()
                        if isinstance(item, KernelExit):
                            break
                        channel, msg = item
                        parent = msg["parent_header"]["msg_id"]
                        seen[parent].add(channel)
                        if {"shell", "iopub"} <= seen[parent]:
                            return
                        if channel == "shell":  # up: give its status a moment, then re-ask
                            wait = REPROBE
                            deadline = min(deadline, loop.time() + REPROBE)
                wait = min(wait * 2, 3.0)
        finally:
            for msg_id in seen:
                self._listeners.pop(msg_id, None)

    def _seal_runtime_dir(self) -> None:
        """Once its sockets are bound, a sandboxed kernel may no longer change its runtime dir.

        Otherwise it could swap a socket for a symlink and have ZMQ reconnect us to another
        socket on the host. As root we take the directory back; the kernel keeps its sockets.
        """
        path = self.slot.runtime_dir
        if os.geteuid() == 0 and path.stat().st_uid != 0:
            os.chown(path, 0, 0)
            os.chmod(path, 0o711)

    async def _watch_process(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        oom_killed = getattr(self.launcher, "oom_killed", None)
        oom = bool(oom_killed and not self._stopping and oom_killed(self.slot))
        self.exit = KernelExit(code, expected=self._stopping, oom=oom)
        if not self._stopping:
            log.warning("kernel %s died (exit code %s)", self.id[:12], code)
        if not self.exited.done():
            self.exited.set_result(self.exit)
        for queue in self._listeners.values():
            queue.put_nowait(self.exit)

    async def stop(self, grace: float = 0.5) -> None:
        """Ask the kernel to exit, kill it after `grace` seconds, release its resources."""
        self._stopping = True
        proc = self.process
        if proc is not None and proc.returncode is None:
            if grace > 0 and "control" in self._sockets:
                with contextlib.suppress(Exception):
                    self.send("control", "shutdown_request", {"restart": False})
                    async with asyncio.timeout(grace):
                        await proc.wait()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await proc.wait()
        if proc is not None and self.exit is None:
            await asyncio.sleep(0)  # let the watcher record the exit
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        loop = asyncio.get_running_loop()
        for sock in self._sockets.values():
            loop.remove_reader(sock.getsockopt(zmq.FD))
            sock.close(linger=0)
        self._sockets.clear()
        if self.exit is None:
            self.exit = KernelExit(proc.returncode if proc else None, expected=True)
        if not self.exited.done():
            self.exited.set_result(self.exit)
        for queue in self._listeners.values():
            queue.put_nowait(self.exit)
        with contextlib.suppress(Exception):
            await self.launcher.release(self.slot)
        await asyncio.to_thread(shutil.rmtree, self.slot.runtime_dir, True)
        log.info("kernel %s stopped", self.id[:12])

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.slot.log_file.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    # -- messaging -------------------------------------------------------------------------

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        """Send a request; return its msg_id. Listen to it before awaiting anything."""
        msg = self.session.msg(msg_type, content)
        self.session.send(self._sockets[channel], msg)
        # Sending reads ZMQ_EVENTS, which can consume the edge that would have woken the
        # reader for a reply already waiting: look again (see `_drain`).
        asyncio.get_running_loop().call_soon(self._drain, channel)
        return msg["header"]["msg_id"]

    def listen(self, msg_id: str) -> asyncio.Queue[tuple[str, Message] | KernelExit]:
        queue: asyncio.Queue[tuple[str, Message] | KernelExit] = asyncio.Queue()
        if self.exit is not None:
            queue.put_nowait(self.exit)
        self._listeners[msg_id] = queue
        return queue

    def unlisten(self, msg_id: str) -> None:
        self._listeners.pop(msg_id, None)

    def execute(self, code: str, *, silent: bool = False) -> str:
        return self.send(
            "shell",
            "execute_request",
            {
                "code": code,
                "silent": silent,
                "store_history": not silent,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": False,
            },
        )

    def kill(self) -> None:
        """End the process at once, as a death (listeners see an unexpected exit)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def interrupt(self) -> None:
        """Message-mode interrupt: a signal to a sandbox wrapper would kill the kernel."""
        if self.alive:
            self.send("control", "interrupt_request", {})

    async def run_silent(self, code: str, timeout: float = 10) -> Message:
        """Run set-up code without output or history; return the execute_reply content."""
        msg_id = self.execute(code, silent=True)
        queue = self.listen(msg_id)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    item = await queue.get()
                    if isinstance(item, KernelExit):
                        raise KernelStartFailed("kernel exited during set-up")
                    channel, msg = item
                    if channel == "shell":
                        return msg["content"]
        finally:
            self.unlisten(msg_id)

    def _drain(self, channel: str) -> None:
        """Take every message waiting on a channel and route it by its parent msg_id.

        ZMQ_FD is edge-triggered and any operation on the socket (a send, reading
        ZMQ_EVENTS) may consume the edge, so readiness is always re-checked through
        ZMQ_EVENTS and the socket drained until it is empty. Awaiting `recv` on a zmq.asyncio
        socket that another task sends on can miss its wakeup forever (pyzmq #2173): seen
        here as kernels that answered but whose replies were never read.
        """
        sock = self._sockets.get(channel)
        if sock is None:
            return
        session = self.session
        listeners = self._listeners
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            try:
                _, parts = session.feed_identities(frames, copy=True)
                msg = session.deserialize(parts, content=True, copy=True)
                if channel == "iopub" and msg["msg_type"] == "stream":
                    msg["raw_content"] = parts[4]  # the kernel's own JSON: see Run.pump
            except Exception:
                log.warning("kernel %s: undecodable %s message", self.id[:12], channel)
                continue
            parent = msg.get("parent_header", {}).get("msg_id")
            queue = listeners.get(parent) if parent else None
            if queue is not None:
                queue.put_nowait((channel, msg))
            else:
                log.debug(
                    "kernel %s: %s %s without listener", self.id[:12], channel, msg["msg_type"]
                )
