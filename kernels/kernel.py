"""One running ipykernel process and the client end of its channels.

`Kernel` owns the process (started through a `Launcher`) and one connection per channel
(`kernels/zmtp.py`: read with a size limit), and routes every message by
`parent_header.msg_id` to whoever listens for that request. Process exit is awaited, not
polled, so a death reaches listeners at once as a `KernelExit` item.

A listener may carry an `OutputBudget`: output messages past it are dropped before their
content is decoded or queued (a `Dropped` item says so once), so an execution that floods
costs the server what its caps allow and no more, however fast the kernel writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import uuid
from dataclasses import dataclass
from hmac import compare_digest
from pathlib import Path
from typing import Any

from jupyter_client.adapter import adapt
from jupyter_client.connect import write_connection_file
from jupyter_client.session import Session

from . import zmtp
from .errors import KernelStartFailed
from .launcher import KernelSlot, Launcher, stop_processes
from .outputs import KINDS
from .storable import clean, may_hold_surrogates

log = logging.getLogger(__name__)

CHANNELS = {"shell": b"DEALER", "iopub": b"SUB", "control": b"DEALER"}
DELIM = b"<IDS|MSG>"
# Messages that carry output: the ones an execution's budget counts and may drop (errors
# always pass, as they pass the caps).
OUTPUT_TYPES = frozenset(KINDS) - {"error"}
REPROBE = 0.05  # seconds between readiness probes once the kernel answers on shell
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20


@dataclass(frozen=True)
class KernelExit:
    """Delivered to listeners when the process is gone; `expected` if we ended it."""

    returncode: int | None
    expected: bool
    oom: bool = False  # the launcher saw its memory limit kill the kernel


@dataclass(frozen=True)
class Dropped:
    """Delivered in place of a message that was not taken.

    `reason`: "budget" (the listener's output budget was spent; said once per listener),
    "oversize" (over the kernel message size limit) or "malformed" (undecodable, badly
    signed or not a Jupyter message).
    """

    channel: str
    msg_type: str
    size: int
    reason: str
    parent: str = ""  # the request it answered, when that could be read


@dataclass
class OutputBudget:
    """Output a listener still takes: raw content bytes and messages."""

    bytes: int
    messages: int


Message = dict[str, Any]
Item = tuple[str, Message] | KernelExit | Dropped


class _Listener:
    __slots__ = ("budget", "queue", "spent")

    def __init__(
        self, budget: OutputBudget | None, queue: asyncio.Queue[Item] | None = None
    ) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue() if queue is None else queue
        self.budget = budget
        self.spent = False


def set_nice(pids: set[int], nice: int) -> None:
    """Set the nice value of every thread of `pids` (Linux keeps one per thread, and a new
    thread starts with its creator's), and of the autogroup of each that leads its session.

    Where the kernel groups processes by session (`sched_autogroup_enabled`, Debian's
    default), CPU is shared fairly between sessions first and by nice only inside one: a
    kernel is a session of its own, so its nice alone would change nothing against other
    kernels or the server. The autogroup's nice is what counts there.
    """
    for pid in pids:
        try:
            tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            tids = [pid]
        for tid in tids:
            with contextlib.suppress(OSError):  # gone, or not ours to change
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        with contextlib.suppress(OSError):  # gone, no autogroups, or not ours to change
            if os.getsid(pid) == pid:  # never the server's own session
                with open(f"/proc/{pid}/autogroup", "w") as f:
                    f.write(str(nice))


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def decode(session: Session, parts: list[bytes], header: Any, parent: Any) -> dict[str, Any]:
    """`session.deserialize(parts)` without what costs and serves nothing here (a fifth of
    the server's time per execution went to it): the header and parent header, already
    parsed by the caller, are not parsed again, and their dates stay ISO strings (nothing
    reads them; jupyter_client parses each with dateutil). The signature is checked as
    jupyter_client checks it, replays included; messages of another protocol version than
    5 are adapted as there."""
    signature = parts[0]
    if not signature or signature in session.digest_history:
        raise ValueError("unsigned or replayed message")
    session._add_digest(signature)
    if not compare_digest(signature, session.sign(parts[1:5])):
        raise ValueError("invalid signature")
    if not isinstance(header, dict) or not isinstance(parent, dict):
        raise ValueError("malformed header")
    msg = {
        "header": header,
        "msg_id": header["msg_id"],
        "msg_type": header["msg_type"],
        "parent_header": parent,
        "metadata": session.unpack(parts[3]),
        "content": session.unpack(parts[4]),
        "buffers": [memoryview(b) for b in parts[5:]],
    }
    if not str(header.get("version", "5")).startswith("5"):
        return adapt(msg)  # type: ignore[no-any-return]
    return msg


class Kernel:
    """A started kernel: send requests, listen for the messages they cause, stop it."""

    def __init__(
        self,
        launcher: Launcher,
        slot: KernelSlot,
        session: Session,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.launcher = launcher
        self.slot = slot
        self.id = slot.kernel_id
        self.session = session
        self.max_message_bytes = max_message_bytes
        self.process: asyncio.subprocess.Process | None = None
        self.exit: KernelExit | None = None
        self._stopping = False
        self._peers: dict[str, zmtp.ZmtpPeer] = {}
        self._listeners: dict[str, _Listener] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.exited = asyncio.get_running_loop().create_future()
        self.own_processes: set[int] = set()  # the kernel and its wrappers, once ready
        self.work_path = ""  # where the kernel sees its work dir, once claimed

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        launcher: Launcher,
        runtime_root: Path,
        timeout: float = 60,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        nice: int = 0,
    ) -> Kernel:
        """Start a kernel and return once its shell and iopub channels both answer; `nice`,
        unless 0: its CPU priority while it starts (see `renice`)."""
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
        view = launcher.runtime_view  # the kernel may see its runtime dir elsewhere
        _, info = write_connection_file(
            str(slot.connection_file),
            ip=f"{view}/{Path(slot.ipc_prefix).name}" if view else slot.ipc_prefix,
            key=key.encode(),
            transport="ipc",
            kernel_name="kss",
        )
        session = Session(key=key.encode(), username="kss")
        kernel = cls(launcher, slot, session, max_message_bytes)
        try:
            kernel.process = await launcher.start(slot)
            if nice:  # before the wrappers fork: whatever they start inherits it
                set_nice({kernel.process.pid}, nice)
                launcher.prioritize(slot, nice)
            loop = asyncio.get_running_loop()
            kernel._tasks.append(loop.create_task(kernel._watch_process(), name="kernel-exit"))
            async with asyncio.timeout(timeout):
                await kernel._connect(info)
                await kernel._confirm_ready()
            kernel._seal_runtime_dir()
            kernel.own_processes = launcher.processes(slot)
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

    async def _connect(self, info: dict[str, Any]) -> None:
        """Connect every channel once the kernel has bound its sockets (or fail if it exits)."""

        async def one(name: str, kind: bytes) -> None:
            path = f"{self.slot.ipc_prefix}-{info[f'{name}_port']}"
            peer = await zmtp.connect(
                path,
                kind,
                functools.partial(self._on_message, name),
                self.max_message_bytes,
                identity=self.session.bsession if kind == b"DEALER" else b"",
                on_lost=self._peer_lost,
            )
            self._peers[name] = peer

        connecting = asyncio.gather(*(one(name, kind) for name, kind in CHANNELS.items()))
        connected = False
        try:
            await asyncio.wait({connecting, self.exited}, return_when=asyncio.FIRST_COMPLETED)
            connected = connecting.done()
        finally:
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(BaseException):
                    await connecting
        if not connected:
            code = self.exit.returncode if self.exit else None
            raise KernelStartFailed(f"kernel exited with code {code} before it listened")
        connecting.result()

    def _peer_lost(self) -> None:
        """A channel closed: the kernel is exiting, or it broke the protocol (then end it)."""
        if self._stopping or not self.alive:
            return
        task = asyncio.get_running_loop().create_task(self._end_if_still_running())
        self._tasks.append(task)

    async def _end_if_still_running(self, grace: float = 1.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.shield(self.exited)
                return  # it was exiting: the exit says why
        if not self._stopping and self.alive:
            log.warning("kernel %s broke its socket protocol; stopping it", self.id[:12])
            self.kill()

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
        shared = _Listener(None)  # every probe's messages land in one queue
        queue = shared.queue
        seen: dict[str, set[str]] = {}
        wait = 0.2
        try:
            while True:
                if self.exit is not None:
                    raise KernelStartFailed(f"kernel exited with code {self.exit.returncode}")
                msg_id = self.send("shell", "kernel_info_request", {})
                seen[msg_id] = set()
                self._listeners[msg_id] = shared
                deadline = loop.time() + wait
                with contextlib.suppress(TimeoutError):
                    while True:
                        async with asyncio.timeout_at(deadline):
                            item = await queue.get()
                        if isinstance(item, KernelExit):
                            break
                        if isinstance(item, Dropped):
                            continue
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

        Otherwise it could swap a socket for a symlink to another socket on the host before
        a later connection. As root we take the directory back; the kernel keeps its sockets.
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
        for listener in self._listeners.values():
            listener.queue.put_nowait(self.exit)

    async def stop(self, grace: float = 0.5) -> None:
        """Ask the kernel to exit, kill it after `grace` seconds, release its resources."""
        self._stopping = True
        proc = self.process
        if proc is not None and proc.returncode is None:
            if grace > 0 and "control" in self._peers:
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
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()
        if self.exit is None:
            self.exit = KernelExit(proc.returncode if proc else None, expected=True)
        if not self.exited.done():
            self.exited.set_result(self.exit)
        for listener in self._listeners.values():
            listener.queue.put_nowait(self.exit)
        with contextlib.suppress(Exception):
            await self.launcher.release(self.slot)
        await asyncio.to_thread(shutil.rmtree, self.slot.runtime_dir, True)
        log.info("kernel %s stopped", self.id[:12])

    async def stop_strays(self) -> int:
        """Stop every process the kernel's code started that still runs; how many."""
        if not self.alive or not self.own_processes:
            return 0
        return await stop_processes(self.launcher, self.slot, self.own_processes)

    def process_limit_hits(self) -> int:
        return self.launcher.process_limit_hits(self.slot)

    def renice(self, nice: int) -> None:
        """Set the CPU priority of every process of the kernel (lowering `nice` takes root)."""
        if self.alive:
            set_nice(self.launcher.processes(self.slot), nice)
            self.launcher.prioritize(self.slot, nice)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.slot.log_file.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    # -- messaging -------------------------------------------------------------------------

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        """Send a request; return its msg_id. Listen to it before awaiting anything."""
        msg = self.session.msg(msg_type, content)
        peer = self._peers.get(channel)
        if peer is not None and not peer.closed:  # else the kernel is gone: its exit says so
            peer.send(self.session.serialize(msg))
        return msg["header"]["msg_id"]

    def listen(
        self,
        msg_id: str,
        budget: OutputBudget | None = None,
        queue: asyncio.Queue[Item] | None = None,
    ) -> asyncio.Queue[Item]:
        """The messages caused by request `msg_id`, from now on (into `queue` when given,
        which several requests may share); output past `budget` is dropped undecoded."""
        listener = _Listener(budget, queue)
        if self.exit is not None:
            listener.queue.put_nowait(self.exit)
        self._listeners[msg_id] = listener
        return listener.queue

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

    def _on_message(self, channel: str, message: zmtp.Message) -> None:
        """Route one received message to the listener of its parent request.

        The kernel is untrusted: anything that is not a well-formed, signed Jupyter message
        reaches its listener (when one can be named) as `Dropped`, never as an exception.
        """
        frames = message.frames
        try:
            parts = frames[frames.index(DELIM) + 1 :]
        except ValueError:
            parts = []
        parent = _loads(parts[2]) if len(parts) > 2 else None
        parent_id = parent.get("msg_id") if isinstance(parent, dict) else None
        listener = self._listeners.get(parent_id) if isinstance(parent_id, str) else None
        header = _loads(parts[1]) if len(parts) > 1 else None
        msg_type = header.get("msg_type") if isinstance(header, dict) else None
        msg_type = msg_type if isinstance(msg_type, str) else ""
        size = sum(map(len, frames)) + message.dropped
        if message.dropped or len(parts) < 5:
            reason = "oversize" if message.dropped else "malformed"
            log.warning(
                "kernel %s: %s %s message (%d bytes) dropped", self.id[:12], reason, channel, size
            )
            if listener is not None:
                listener.queue.put_nowait(Dropped(channel, msg_type, size, reason, parent_id))
            return
        if listener is None:
            log.debug("kernel %s: %s %s without listener", self.id[:12], channel, msg_type)
            return
        budget = listener.budget
        if budget is not None and channel == "iopub" and msg_type in OUTPUT_TYPES:
            budget.bytes -= sum(map(len, parts[4:]))
            budget.messages -= 1
            if budget.bytes < 0 or budget.messages < 0:
                if not listener.spent:
                    listener.spent = True
                    listener.queue.put_nowait(Dropped(channel, msg_type, size, "budget", parent_id))
                return
        try:
            msg = decode(self.session, parts, header, parent)
        except Exception:  # bad signature, bad JSON, too deeply nested...
            log.warning("kernel %s: undecodable %s %s message", self.id[:12], channel, msg_type)
            listener.queue.put_nowait(Dropped(channel, msg_type, size, "malformed", parent_id))
            return
        if any(may_hold_surrogates(part) for part in parts[1:5]):
            for key in ("header", "parent_header", "metadata", "content"):
                msg[key] = clean(msg[key])
        elif channel == "iopub" and msg_type == "stream":
            msg["raw_content"] = parts[4]  # the kernel's own JSON: see `stream_members`
        listener.queue.put_nowait((channel, msg))
