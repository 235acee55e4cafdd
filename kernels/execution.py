"""One execution: its request, its message pump, and the cell it leaves behind.

`Run.pump` consumes the kernel messages of one execute request until its reply and idle
status (or the kernel's end), turning them into events through `OutputCollector`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .hibernate import Restore
from .kernel import Dropped, Kernel, KernelExit
from .outputs import (
    TRUNCATION_MARKER,
    MalformedMessage,
    OutputCollector,
    error_event,
    event_from_message,
)
from .states import CellStatus

# Seconds from an interrupted request's idle status to its missing reply. The reply and the
# idle status travel on different sockets, so on a loaded machine a reply may trail by
# more than a second; only interrupted requests are ever judged dropped (see `pump`).
DROPPED_REPLY_GRACE = 3.0


@dataclass(kw_only=True)
class Cell:
    """One finished execution, as clients saw it."""

    id: str  # the client's id of the execution (may repeat)
    cell_id: str  # the transcript's id of the cell (never repeats)
    code: str
    status: CellStatus
    execution_count: int | None
    started: float
    duration_ms: float
    kernel_id: str
    kernel_restarted: bool
    collector: OutputCollector
    first_seq: int
    last_seq: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    restore: Restore | None = None  # hibernated variables restored before this execution

    @classmethod
    def aborted(
        cls,
        execution: Execution,
        collector: OutputCollector,
        kernel_id: str = "",
        status: CellStatus = CellStatus.ABORTED,
        first_seq: int = 0,
    ) -> Cell:
        """The cell of an execution that never ran to its end on a kernel."""
        return cls(
            id=execution.id,
            cell_id=execution.cell_id,
            code=execution.code,
            status=status,
            execution_count=None,
            started=time.time(),
            duration_ms=0.0,
            kernel_id=kernel_id,
            kernel_restarted=False,
            collector=collector,
            first_seq=first_seq,
        )

    def done_event(self) -> dict[str, Any]:
        """The `done` event: always an execution's last."""
        return {
            "type": "done",
            "status": self.status,
            "execution_count": self.execution_count,
            "duration_ms": round(self.duration_ms, 3),
            "kernel_restarted": self.kernel_restarted,
            "truncated": self.collector.truncated,
        }

    def summary(self) -> dict[str, Any]:
        """The whole-result answer of the REST execute call."""
        c = self.collector
        return {
            "id": self.id,
            "status": self.status,
            "execution_count": self.execution_count,
            "stdout": c.stdout.text,
            "stderr": c.stderr.text,
            "result": c.result,
            "outputs": c.outputs,
            "error": None if c.error is None else {**c.error, "text": plain_traceback(c.error)},
            "duration_ms": round(self.duration_ms, 3),
            "kernel_restarted": self.kernel_restarted,
            "truncated": c.truncated or c.stdout.truncated or c.stderr.truncated,
            "files": self.files,
            **({} if self.restore is None else self.restore.answer()),
        }


@dataclass
class Execution:
    id: str
    code: str
    timeout: float
    cell_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # client ids may repeat
    interrupt_requested: bool = False  # interrupted before it reached its kernel
    install_packages: list[str] = field(default_factory=list)  # installed before the code
    done: asyncio.Future[Cell] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True)
class Started:
    """An execution that has just been sent to its kernel."""

    cell_id: str
    exec_id: str
    code: str
    kernel_id: str
    first_seq: int
    started: float


class WorkDirSnapshot(Protocol):
    """The work dir before an execution, to compare with after it."""

    used: int  # every byte it held


class FileWatch(Protocol):
    """The session's view of its work dir: what an execution changed, how full it is, and
    where a hibernating kernel keeps its variables."""

    quota: int
    hibernation_dir: str  # relative to the work dir; hidden from listings and expiry

    async def snapshot(self) -> WorkDirSnapshot: ...

    async def changes(self, before: Any) -> list[dict[str, Any]]:
        """`file` event bodies: name, size, event (created/modified), url."""
        ...

    async def usage(self) -> int:
        """Every byte the work dir holds, counted against `quota`."""
        ...

    async def has_hibernation(self) -> bool:
        """Whether a complete snapshot of a kernel's variables waits to be restored."""
        ...

    async def drop_hibernation(self) -> None:
        """Remove the snapshot (restored, stale or cut short), if there is one."""
        ...


EventSink = Callable[[int, str], None]


Publish = Callable[..., int]  # (event, exec_id, members=None) -> seq


def emit(publish: Publish, collector: OutputCollector, exec_id: str, event: dict[str, Any]) -> None:
    """Record `event` in an execution's cell and publish what its caps let through: how every
    output the server itself adds to an execution (errors above all) is told."""
    for out in collector.accept(event):
        publish(out, exec_id)


class Run:
    """Message pump of one execution: until its reply and idle status, or the kernel's end.

    What the kernel sends is untrusted: a malformed output is dropped with a note on stderr,
    a lost or malformed reply ends the execution as an error, and an execution whose iopub
    lost a message (too large, undecodable) does not wait for an idle status that may never
    come.
    """

    def __init__(
        self, publish: Publish, exec_id: str, collector: OutputCollector, kernel: Kernel
    ) -> None:
        self.publish = publish
        self.kernel = kernel
        self.started = False
        self.interrupt_pending = False
        self._repeat: asyncio.Task[None] | None = None
        self.exec_id = exec_id
        self.collector = collector
        self.reply_status: str | None = None
        self.reply: dict[str, Any] = {}
        self.idle = False
        self.exit: KernelExit | None = None
        self.execution_count: int | None = None
        self.overrun: str | None = None  # why the disk guard stopped this execution
        self.lost_iopub = False  # an iopub message was dropped: idle may never come

    def emit(self, event: dict[str, Any]) -> None:
        emit(self.publish, self.collector, self.exec_id, event)

    def _dropped(self) -> None:
        self.reply_status = CellStatus.ERROR
        self.emit(error_event("KeyboardInterrupt", "interrupted before the code started"))

    def request_interrupt(self) -> None:
        """Interrupt this execution once the kernel has begun it (see `_send_interrupt`)."""
        self.interrupt_pending = True
        if self.started:
            self._send_interrupt()

    def _send_interrupt(self) -> None:
        # A SIGINT that lands between execute_input and the user's code is swallowed by
        # ipykernel's own machinery, so, as a person would, interrupt again if it goes on.
        self.kernel.interrupt()
        if self._repeat is None:
            self._repeat = asyncio.get_running_loop().create_task(
                self._repeat_interrupt(), name="interrupt-repeat"
            )

    async def _repeat_interrupt(self) -> None:
        for delay in (1.0, 2.0):
            await asyncio.sleep(delay)
            if self.reply_status is not None or self.exit is not None:
                return
            self.kernel.interrupt()

    def finish(self) -> None:
        """Stop anything still pending for this execution."""
        if self._repeat is not None:
            self._repeat.cancel()
        if self.reply_status == CellStatus.ERROR and self.collector.error is None:
            # The reply says it failed but no error output came (the kernel could not send
            # it, or it was dropped): the reply's own fields are the error.
            try:
                self.emit(
                    error_event(
                        self.reply.get("ename", "Error"),
                        self.reply.get("evalue", "the execution failed"),
                        self.reply.get("traceback", []),
                    )
                )
            except MalformedMessage:
                self.emit(error_event("Error", "the execution failed"))

    async def pump(self, queue: asyncio.Queue[Any]) -> CellStatus:
        while not (self.reply_status and self.idle) and self.exit is None:
            waiting_idle = self.reply_status is not None and self.lost_iopub
            if (self.idle and self.reply_status is None and self.interrupt_pending) or waiting_idle:
                # An interrupt that lands before the user's code starts aborts ipykernel's
                # handler, which then publishes idle, sends no reply and runs nothing; and
                # an idle status may itself have been lost with a dropped message.
                try:
                    item = await asyncio.wait_for(queue.get(), DROPPED_REPLY_GRACE)
                except TimeoutError:
                    if not waiting_idle:
                        self._dropped()
                    break
            else:
                item = await queue.get()
            if isinstance(item, KernelExit):
                self.exit = item
                break
            if isinstance(item, Dropped):
                self._lost(item)
                continue
            channel, msg = item
            msg_type = msg["msg_type"]
            content = msg["content"]
            if channel == "shell":
                self._reply(content)
                continue
            if channel != "iopub" or not isinstance(content, dict):
                continue
            if msg_type == "status":
                self.idle = content.get("execution_state") == "idle"
                continue
            if msg_type == "execute_input":
                self.execution_count = _count(content.get("execution_count"))
                self.started = True
                if self.interrupt_pending:
                    self._send_interrupt()
                continue
            try:
                event = event_from_message(msg_type, content)
            except MalformedMessage as exc:
                self._lost(Dropped("iopub", msg_type, 0, "malformed"), str(exc))
                continue
            if event is None:
                continue
            sent = self.collector.accept(event)
            raw = msg.get("raw_content")
            if raw is not None and len(sent) == 1 and sent[0] is event:
                self.publish(event, self.exec_id, stream_members(raw, content, self.exec_id))
                continue
            for out in sent:
                self.publish(out, self.exec_id)
        return CellStatus(self.reply_status or CellStatus.ERROR)

    def _reply(self, content: Any) -> None:
        if not isinstance(content, dict) or content.get("status") not in REPLY_STATUSES:
            self._lost(Dropped("shell", "execute_reply", 0, "malformed"))
            return
        self.reply = content
        self.reply_status = content["status"]
        if (count := _count(content.get("execution_count"))) is not None:
            self.execution_count = count

    def _lost(self, dropped: Dropped, why: str = "") -> None:
        """A message of this execution that was not taken: say so where it matters."""
        if dropped.reason == "budget":  # the caps were reached before it was even read
            if not self.collector.truncated:
                marker = TRUNCATION_MARKER.format(what="output", limit=self.collector.client_cap)
                self.publish(self.collector.truncate(marker), self.exec_id)
            return
        what = dropped.msg_type or "a"
        if dropped.reason == "oversize":
            text = f"a {what} message of {dropped.size} bytes, over the kernel message limit"
        else:
            text = f"a malformed {what} message" + (f" ({why})" if why else "")
        if dropped.channel == "shell":
            self.reply_status = CellStatus.ERROR
            self.reply = {"ename": "KernelProtocolError", "evalue": f"the kernel sent {text}"}
            return
        self.lost_iopub = True
        if not self.collector.truncated:
            self.emit({"type": "stream", "name": "stderr", "text": f"\n[dropped {text}]\n"})


REPLY_STATUSES = frozenset({CellStatus.OK, CellStatus.ERROR, CellStatus.ABORTED})


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stream_members(raw: bytes, content: dict[str, Any], exec_id: str) -> str | None:
    """A stream event as JSON members, reusing the kernel's own encoding of its content.

    Encoding the text again is the server's largest cost when output streams (every newline
    escaped anew); the kernel already sent exactly that JSON. None when it does not fit.
    """
    if content.keys() != {"name", "text"}:
        return None
    try:
        body = raw.decode().strip()
    except UnicodeDecodeError:
        return None
    if len(body) < 2 or body[0] != "{" or body[-1] != "}":
        return None
    return f'"type":"stream",{body[1:-1]},"id":{json.dumps(exec_id)}'


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain_traceback(error: dict[str, Any]) -> str:
    """The traceback as plain text (no ANSI colours), ending with `ename: evalue`: what a
    model or a log reads; the notebook keeps IPython's coloured one."""
    text = _ANSI.sub("", "\n".join(error.get("traceback") or [])).strip()
    last = f"{error['ename']}: {error['evalue']}" if error.get("evalue") else error["ename"]
    return text if text.endswith(last) else f"{text}\n{last}".strip()


def describe_exit(returncode: int | None, oom: bool = False) -> str:
    if oom:
        return "the kernel was killed for using more memory than its limit"
    if returncode is None:
        return "the kernel process ended"
    if returncode < 0:
        return f"the kernel process died from signal {-returncode}"
    if 128 < returncode <= 128 + 64:  # a sandbox wrapper reports its child's signal so
        return f"the kernel process died from signal {returncode - 128}"
    return f"the kernel process exited with code {returncode}"
