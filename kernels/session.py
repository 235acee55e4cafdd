"""`KernelSession`: one user's kernel, its execution queue, state and event log.

Executions run one at a time in arrival order on a worker task. Each is bounded by a
timeout: on expiry the kernel is interrupted (message mode), and replaced if it does not
answer within a grace period. A kernel that dies is noticed when its process exits; the
running execution ends with an error naming the death and the next one gets a fresh kernel
with `kernel_restarted: true`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import KernelError, QueueFull, SessionClosed
from .events import EventLog
from .execution import (
    Cell,
    CellHook,
    EventSink,
    Execution,
    FileWatch,
    Run,
    Started,
    StartHook,
    describe_exit,
)
from .kernel import Kernel, KernelExit
from .outputs import OutputCollector

if TYPE_CHECKING:
    from .pool import KernelPool

__all__ = ["Cell", "EventSink", "Execution", "KernelSession", "Limits", "SessionState", "Started"]

log = logging.getLogger(__name__)


class SessionState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RESTARTING = "restarting"
    DEAD = "dead"
    CLOSED = "closed"


@dataclass(frozen=True)
class Limits:
    default_timeout: float = 60
    max_timeout: float = 600
    interrupt_grace: float = 3
    disk_check_interval: float = 1.0  # how often a running execution's disk use is checked
    client_cap: int = 10_000_000
    text_cap: int = 100_000
    max_queue: int = 100
    replay_events: int = 10_000
    replay_bytes: int = 32_000_000
    subscriber_bytes: int = 64_000_000


class KernelSession:
    """The stateful kernel of one (tenant, user) and everything queued for it."""

    def __init__(
        self,
        tenant: str,
        user: str,
        work_dir: Path,
        pool: KernelPool,
        limits: Limits,
        last_seq: int = 0,
        sink: EventSink | None = None,
    ) -> None:
        self.tenant = tenant
        self.user = user
        self.work_dir = work_dir
        self.pool = pool
        self.limits = limits
        self.state = SessionState.STARTING
        self.created = time.time()
        self.last_activity = self.created
        self.execution_count = 0
        self.kernel: Kernel | None = None
        self.events = EventLog(
            limits.replay_events, limits.replay_bytes, limits.subscriber_bytes, last_seq, sink
        )
        self.cell_hooks: list[CellHook] = []
        self.start_hooks: list[StartHook] = []
        self.file_watch: FileWatch | None = None
        self._kernel_lost = False
        self._kernel_lock = asyncio.Lock()
        self._queue: asyncio.Queue[Execution] = asyncio.Queue()
        self._running: Execution | None = None
        self._run_state: Run | None = None
        self._worker = asyncio.get_running_loop().create_task(
            self._work(), name=f"session-{tenant}/{user}"
        )

    def __repr__(self) -> str:
        return f"<KernelSession {self.tenant}/{self.user} {self.state}>"

    def info(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "state": str(self.state),
            "created": self.created,
            "last_activity": self.last_activity,
            "execution_count": self.execution_count,
            "queued": self._queue.qsize(),
            "connections": self.events.subscriber_count,
        }

    @property
    def busy(self) -> bool:
        return self._running is not None or not self._queue.empty()

    # -- requests --------------------------------------------------------------------------

    async def ensure_kernel(self) -> Kernel:
        """The running kernel, claiming a fresh one when there is none."""
        async with self._kernel_lock:
            if self.kernel is not None and self.kernel.alive:
                return self.kernel
            if self.state is SessionState.CLOSED:
                raise SessionClosed("session is closed")
            try:
                kernel = await self.pool.take(self.work_dir)
            except KernelError:
                self._set_state(SessionState.DEAD)
                raise
            self.kernel = kernel
            asyncio.get_running_loop().create_task(
                self._watch(kernel), name=f"watch-{kernel.id[:12]}"
            )
            if self.state in (SessionState.STARTING, SessionState.RESTARTING, SessionState.DEAD):
                self._set_state(SessionState.IDLE)
            return kernel

    def submit(
        self, code: str, exec_id: str | None = None, timeout: float | None = None
    ) -> Execution:
        """Queue `code`; the returned execution's `done` resolves with its `Cell`."""
        if self.state is SessionState.CLOSED:
            raise SessionClosed("session is closed")
        if self._queue.qsize() >= self.limits.max_queue:
            raise QueueFull(f"{self.limits.max_queue} executions are already queued")
        timeout = self.limits.default_timeout if timeout is None else timeout
        execution = Execution(
            exec_id or uuid.uuid4().hex, code, min(timeout, self.limits.max_timeout)
        )
        position = self._queue.qsize() + (1 if self._running else 0)
        self._queue.put_nowait(execution)
        if position:
            self._publish({"type": "queued", "position": position}, execution.id)
        return execution

    def publish_note(self, markdown: str) -> int:
        """Tell watchers a markdown note was added to the transcript; returns its seq."""
        return self._publish({"type": "note", "markdown": markdown})

    def interrupt(self) -> bool:
        """Interrupt the running execution; False when nothing runs.

        An interrupt that arrives before the kernel has begun the code is held until it
        has (`execute_input`): sent earlier, it would hit an idle kernel and be lost.
        """
        run = self._run_state
        if self._running is None or self.kernel is None or run is None:
            return False
        run.request_interrupt()
        return True

    async def restart(self) -> None:
        """Replace the kernel with a fresh one; a running execution ends as `aborted`."""
        self._set_state(SessionState.RESTARTING)
        old = self.kernel
        self.kernel = None
        self._kernel_lost = True
        if old is not None:
            await self.pool.discard(old)
        await self.ensure_kernel()

    async def close(self) -> None:
        """Stop the worker and the kernel; queued executions end as `aborted`."""
        if self.state is SessionState.CLOSED:
            return
        self._set_state(SessionState.CLOSED)
        pending = [self._running] if self._running else []
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for execution in pending:
            if not execution.done.done():
                collector = OutputCollector(self.limits.client_cap, self.limits.text_cap)
                execution.done.set_result(
                    Cell(
                        execution.id,
                        execution.code,
                        "aborted",
                        None,
                        time.time(),
                        0.0,
                        False,
                        collector,
                        0,
                        cell_id=execution.cell_id,
                    )
                )
        if self.kernel is not None:
            kernel, self.kernel = self.kernel, None
            await self.pool.discard(kernel)
        self.events.close()

    # -- internals -------------------------------------------------------------------------

    def _publish(
        self, event: dict[str, Any], exec_id: str | None = None, members: str | None = None
    ) -> int:
        if exec_id is not None:
            event["id"] = exec_id
        return self.events.publish(event, members)

    def _set_state(self, state: SessionState, exec_id: str | None = None) -> None:
        if state is self.state:
            return
        if self.state is SessionState.CLOSED:
            return
        self.state = state
        self._publish({"type": "status", "state": str(state)}, exec_id)

    async def _watch(self, kernel: Kernel) -> None:
        exit_ = await kernel.exited
        if exit_.expected or self.kernel is not kernel:
            return
        if self._running is None:  # a running execution reports the death itself
            self._kernel_died(kernel, exit_)

    def _kernel_died(self, kernel: Kernel, exit_: KernelExit, exec_id: str | None = None) -> None:
        if self.kernel is kernel:
            self.kernel = None
        self._kernel_lost = True
        self._set_state(SessionState.DEAD, exec_id)
        asyncio.get_running_loop().create_task(self.pool.discard(kernel), name="discard-dead")

    async def _work(self) -> None:
        while True:
            execution = await self._queue.get()
            self._running = execution
            try:
                cell = await self._run(execution)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("execution %s failed", execution.id)
                cell = self._failed(execution, exc)
            finally:
                self._running = None
                self._run_state = None
            if not execution.done.done():
                execution.done.set_result(cell)
            for hook in self.cell_hooks:
                try:
                    await hook(self, cell)
                except Exception:
                    log.exception("cell hook failed for %s/%s", self.tenant, self.user)

    def _failed(self, execution: Execution, exc: Exception) -> Cell:
        collector = OutputCollector(self.limits.client_cap, self.limits.text_cap)
        seq = self.events.last_seq + 1
        error = {"type": "error", "ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
        for event in collector.accept(error):
            self._publish(event, execution.id)
        cell = Cell(
            execution.id,
            execution.code,
            "error",
            None,
            time.time(),
            0.0,
            self._kernel_lost,
            collector,
            seq,
            cell_id=execution.cell_id,
        )
        if self.state is not SessionState.DEAD:
            self._set_state(SessionState.IDLE, execution.id)
        cell.last_seq = self._publish(self._done_event(cell), execution.id)
        return cell

    async def _run(self, execution: Execution) -> Cell:
        self.last_activity = time.time()
        kernel = await self.ensure_kernel()
        restarted, self._kernel_lost = self._kernel_lost, False
        collector = OutputCollector(self.limits.client_cap, self.limits.text_cap)
        started, t0 = time.time(), time.perf_counter()
        first_seq = self.events.last_seq + 1
        self._set_state(SessionState.BUSY, execution.id)
        run = Run(self, execution.id, collector, kernel)
        self._run_state = run
        before = await self.file_watch.snapshot() if self.file_watch else None
        msg_id = kernel.execute(execution.code)
        queue = kernel.listen(msg_id)
        info = Started(
            execution.cell_id, execution.id, execution.code, kernel.id, first_seq, started
        )
        for hook in self.start_hooks:
            hook(self, info)
        try:
            try:
                status = await self._pump_guarded(run, queue, before, execution.timeout)
            except TimeoutError:
                status = "timeout"
                kernel.interrupt()
                try:
                    async with asyncio.timeout(self.limits.interrupt_grace):
                        await run.pump(queue)
                except TimeoutError:
                    log.warning("%r: kernel ignored interrupt after timeout; replacing", self)
                    self._set_state(SessionState.RESTARTING, execution.id)
                    self.kernel = None
                    self._kernel_lost = True
                    await self.pool.discard(kernel)
        finally:
            kernel.unlisten(msg_id)
            run.finish()
        if run.overrun:  # the guard stopped it (or it ended as the guard fired)
            status = "error"
            stop = {"type": "error", "ename": "DiskQuotaExceeded", "evalue": run.overrun}
            for event in collector.accept({**stop, "traceback": []}):
                self._publish(event, execution.id)
        files = await self._announce_files(before, execution.id)
        if run.exit is not None and not run.exit.expected:
            status = "error"
            reason = describe_exit(run.exit.returncode, run.exit.oom)
            death = {"type": "error", "ename": "KernelDied", "evalue": reason, "traceback": []}
            for event in collector.accept(death):
                self._publish(event, execution.id)
            self._kernel_died(kernel, run.exit, execution.id)
        elif run.exit is not None:
            status = "aborted"
        if run.execution_count is not None:
            self.execution_count = run.execution_count
        cell = Cell(
            execution.id,
            execution.code,
            status,
            run.execution_count,
            started,
            (time.perf_counter() - t0) * 1000,
            restarted,
            collector,
            first_seq,
            cell_id=execution.cell_id,
            kernel_id=kernel.id,
            files=files,
        )
        self.last_activity = time.time()
        if self.kernel is not None and self.kernel.alive and self._queue.empty():
            self._set_state(SessionState.IDLE, execution.id)
        cell.last_seq = self._publish(self._done_event(cell), execution.id)
        return cell

    async def _pump_guarded(
        self, run: Run, queue: asyncio.Queue[Any], before: Any, timeout: float
    ) -> str:
        """The execution's pump under its timeout and the disk guard (either: TimeoutError)."""
        async with asyncio.timeout(timeout) as scope:
            if self.file_watch is None:
                return await run.pump(queue)
            guard = asyncio.create_task(self._guard_disk(run, before, scope))
            try:
                return await run.pump(queue)
            finally:
                guard.cancel()

    async def _guard_disk(self, run: Run, before: Any, scope: asyncio.Timeout) -> None:
        """Stop the execution (as a timeout would) once it keeps filling an over-quota disk."""
        assert self.file_watch is not None
        while True:
            await asyncio.sleep(self.limits.disk_check_interval)
            try:
                reason = await self.file_watch.overrun(before)
            except Exception:
                log.exception("%r: could not check disk use", self)
                continue
            if reason:
                log.warning("%r: stopping an execution: %s", self, reason)
                run.overrun = reason
                scope.reschedule(asyncio.get_running_loop().time())
                return

    async def _announce_files(self, before: Any, exec_id: str) -> list[dict[str, Any]]:
        if self.file_watch is None:
            return []
        try:
            files = await self.file_watch.changes(before)
        except Exception:
            log.exception("%r: could not list changed files", self)
            return []
        for change in files:
            self._publish({"type": "file", **change}, exec_id)
        return files

    @staticmethod
    def _done_event(cell: Cell) -> dict[str, Any]:
        return {
            "type": "done",
            "status": cell.status,
            "execution_count": cell.execution_count,
            "duration_ms": round(cell.duration_ms, 3),
            "kernel_restarted": cell.kernel_restarted,
            "truncated": cell.collector.truncated,
        }
