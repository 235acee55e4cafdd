"""`KernelSession`: one user's kernel, its execution queue, state and event log.

Executions run one at a time in arrival order on a worker task. Each is bounded by a
timeout: on expiry the kernel is interrupted (message mode), and replaced if it does not
answer within a grace period. A kernel that dies is noticed when its process exits; the
running execution ends with an error naming the death. When an execution ends, every
process it started that still runs is stopped, and a kernel whose code hit the process limit
is replaced. An execution reports `kernel_restarted: true` whenever it runs on another
kernel than the session's previous execution did (a restart, a death, a timeout, culling, a
server restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packages.errors import PackageError

from . import hibernate, log_context
from .disk_guard import DiskGuard
from .errors import Draining, KernelError, QueueFull, SessionClosed
from .events import EventLog, ReplayBudget
from .execution import (
    Cell,
    Execution,
    Run,
    Started,
    describe_exit,
    emit,
)
from .installs import PackageSource, PipCommandRefused, SessionPackages, described, split_pip
from .kernel import Kernel, KernelExit
from .late import LateOutput
from .launcher import cpu_seconds
from .limits import Limits
from .observer import NoObserver, Resume, SessionObserver
from .outputs import OutputCollector, error_event
from .states import CellStatus, SessionState
from .stats import LimitHit, Replaced

if TYPE_CHECKING:
    from .pool import KernelPool

__all__ = ["KernelSession"]

log = logging.getLogger(__name__)


class KernelSession:
    """The stateful kernel of one (tenant, user) and everything queued for it."""

    def __init__(
        self,
        tenant: str,
        user: str,
        work_dir: Path,
        pool: KernelPool,
        limits: Limits,
        observer: SessionObserver | None = None,
        resume: Resume | None = None,
        packages: PackageSource | None = None,
        replay_budget: ReplayBudget | None = None,
    ) -> None:
        resume = resume or Resume()
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
        self.last_kernel_id = resume.last_kernel_id  # the kernel of the previous execution
        self.events = EventLog(
            limits.replay_events,
            limits.replay_bytes,
            limits.subscriber_bytes,
            resume.last_seq,
            resume.sink,
            replay_budget,
            owner=tenant,
        )
        self.observer: SessionObserver = observer or NoObserver()
        self.packages = SessionPackages(packages, resume.packages)
        self.file_watch = file_watch = self.observer.file_watch(tenant, user)
        self.draining = False  # set by the registry's drain: no more submissions
        self._late: LateOutput | None = None
        # Hibernated variables are looked for once, at the session's first execution.
        self._restore_checked = not (limits.hibernate and file_watch is not None)
        self._kernel_lock = asyncio.Lock()
        self._waiting: deque[Execution] = deque()  # queued, in arrival order
        self._arrived = asyncio.Event()
        self._running: Execution | None = None
        self._run_state: Run | None = None
        self._run_scope: asyncio.Timeout | None = None
        self._strays_of: Kernel | None = None  # whose leftovers to stop once `done` is out
        loop = asyncio.get_running_loop()
        self._worker = loop.create_task(self._work(), name=f"session-{tenant}/{user}")
        self._disk = (
            DiskGuard(
                file_watch,
                self._kernel_cpu,
                self._disk_overrun,
                limits.disk_check_interval,
                name=f"disk-{tenant}/{user}",
            )
            if file_watch is not None
            else None
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
            "queued": self.queued,
            "connections": self.events.subscriber_count,
        }

    @property
    def queued(self) -> int:
        """Executions waiting behind the running one."""
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        return self._running is not None or bool(self._waiting)

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
            await self._forget_late()
            self.kernel = kernel
            self._late = LateOutput(kernel, self._publish, self._outputs_added)
            asyncio.get_running_loop().create_task(
                self._watch(kernel), name=f"watch-{kernel.id[:12]}"
            )
            if self.state in (SessionState.STARTING, SessionState.RESTARTING, SessionState.DEAD):
                self._set_state(SessionState.IDLE)
            return kernel

    def submit(
        self,
        code: str,
        exec_id: str | None = None,
        timeout: float | None = None,
        install_packages: list[str] | None = None,
    ) -> Execution:
        """Queue `code` (after installing `install_packages`); the returned execution's
        `done` resolves with its `Cell`."""
        if self.state is SessionState.CLOSED:
            raise SessionClosed("session is closed")
        if self.draining:
            raise Draining("the server is shutting down and takes no new executions")
        if len(self._waiting) >= self.limits.max_queue:
            raise QueueFull(f"{self.limits.max_queue} executions are already queued")
        timeout = self.limits.default_timeout if timeout is None else timeout
        execution = Execution(
            exec_id or uuid.uuid4().hex,
            code,
            min(timeout, self.limits.max_timeout),
            install_packages=list(install_packages or []),
        )
        position = len(self._waiting) + (1 if self._running else 0)
        self._waiting.append(execution)
        self._arrived.set()
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
        execution = self._running
        if execution is None and self._waiting:
            execution = self._waiting[0]  # submitted, not yet taken by the worker
        if execution is None:
            return False
        run = self._run_state
        if run is not None and execution is self._running:
            run.request_interrupt()
        else:  # it has not reached its kernel yet: its run takes the interrupt on
            execution.interrupt_requested = True
        return True

    def pending(self) -> list[asyncio.Future[Cell]]:
        """The `done` futures of the running and the queued executions."""
        running = [self._running] if self._running is not None else []
        return [e.done for e in [*running, *self._waiting]]

    def abandon(self) -> None:
        """Interrupt the running execution and end the queued ones as `aborted` (a drain
        whose time is up); the running one ends as its interrupt makes it end."""
        waiting, self._waiting = list(self._waiting), deque()
        for execution in waiting:
            cell = Cell.aborted(execution, self._collector(), self.last_kernel_id)
            cell.last_seq = self._publish(cell.done_event(), execution.id)
            execution.done.set_result(cell)
        self.interrupt()

    async def restart(self) -> None:
        """Replace the kernel with a fresh one; a running execution ends as `aborted`.
        Hibernated variables not yet restored are dropped: the user asked for a clean one."""
        await self._drop_kernel(SessionState.RESTARTING, why=Replaced.RESTART)
        await self._forget_hibernation()
        await self.ensure_kernel()

    async def close(self, hibernate: bool = False) -> None:
        """Stop the worker and the kernel; queued executions end as `aborted`.

        `hibernate` (closing an idle session to free its kernel): the kernel first saves its
        variables, within the hibernate limits, for the user's next session to restore.
        Without it (the user shut the session down) hibernated variables are dropped."""
        if self.state is SessionState.CLOSED:
            return
        self._set_state(SessionState.CLOSED)
        idle = not self.busy
        pending = [self._running] if self._running else []
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        if self._disk is not None:
            await self._disk.close()
        pending += self._waiting
        self._waiting.clear()
        for execution in pending:
            if not execution.done.done():
                execution.done.set_result(
                    Cell.aborted(execution, self._collector(), self.last_kernel_id)
                )
        await self._forget_late()
        if self.kernel is not None:
            kernel, self.kernel = self.kernel, None
            failed = hibernate and idle and not await self._hibernate(kernel)
            await self.pool.discard(kernel)
            if failed:  # what it wrote before it failed is of no use
                await self._forget_hibernation()
        if not hibernate:
            await self._forget_hibernation()
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

    def _collector(self) -> OutputCollector:
        limits = self.limits
        return OutputCollector(limits.client_cap, limits.text_cap, max_events=limits.max_events)

    def _outputs_added(self, cell_id: str, outputs: list[dict[str, Any]]) -> None:
        try:
            self.observer.outputs_added(self, cell_id, outputs)
        except Exception:
            log.exception("observer failed on late output of %s/%s", self.tenant, self.user)

    async def _forget_late(self) -> None:
        if self._late is not None:
            late, self._late = self._late, None
            await late.close()

    async def _drop_kernel(
        self,
        state: SessionState,
        exec_id: str | None = None,
        kill: bool = False,
        *,
        why: Replaced,
    ) -> None:
        """Discard the kernel (the next execution gets a fresh one); `kill` ends it at once
        rather than after a graceful shutdown, for a kernel that must not run on a moment."""
        await self._discard(*self._take_kernel(state, exec_id, kill, why=why))

    def _take_kernel(
        self, state: SessionState, exec_id: str | None, kill: bool, *, why: Replaced
    ) -> tuple[Kernel | None, LateOutput | None]:
        """The synchronous half of `_drop_kernel`: from here on no execution can reach it."""
        self._set_state(state, exec_id)
        old, self.kernel = self.kernel, None
        if old is not None:
            self.pool.stats.kernels_replaced[why] += 1
        late, self._late = self._late, None
        if old is not None and kill:
            old.kill()
        return old, late

    async def _discard(self, kernel: Kernel | None, late: LateOutput | None) -> None:
        if late is not None:
            await late.close()
        if kernel is not None:
            await self.pool.discard(kernel)

    # -- hibernation -----------------------------------------------------------------------

    def _snapshot_path(self, kernel: Kernel) -> str:
        assert self.file_watch is not None
        return f"{kernel.work_path}/{self.file_watch.hibernation_dir}"

    async def _hibernate(self, kernel: Kernel) -> bool:
        """Have `kernel` save its variables (bounded by the limits); False when it failed
        (what it wrote is then to be removed once it is stopped). Never raises."""
        watch = self.file_watch
        if not self.limits.hibernate or watch is None or not kernel.alive:
            return True
        if kernel.id != self.last_kernel_id or not kernel.work_path:
            return True  # nothing ran on it: a snapshot waiting to be restored stays as is
        try:
            room = watch.quota - await watch.usage()
            budget = min(self.limits.hibernate_max_bytes, room)
            if budget <= 0:
                log.warning("%r: no room under the quota to hibernate", self)
                return False
            saved = await hibernate.save(
                kernel, self._snapshot_path(kernel), budget, self.limits.hibernate_timeout
            )
        except Exception as exc:  # SnapshotFailed, or the file area failing
            log.warning("%r: could not hibernate: %s", self, exc)
            return False
        log.info(
            "session %s/%s hibernated: %d variables, %d imports, %d bytes in %.2f s; lost %s",
            self.tenant,
            self.user,
            len(saved.saved),
            len(saved.imports),
            saved.bytes,
            saved.seconds,
            [x["name"] for x in saved.lost],
        )
        return True

    async def _forget_hibernation(self) -> None:
        self._restore_checked = True
        if self.file_watch is not None:
            try:
                await self.file_watch.drop_hibernation()
            except Exception:
                log.exception("%r: could not remove hibernated variables", self)

    async def _restore(self, kernel: Kernel, exec_id: str) -> tuple[hibernate.Restore, Kernel]:
        """Restore hibernated variables into the fresh `kernel`; a restore that fails leaves
        a clean kernel in its place. The snapshot is removed either way: a later kernel
        change must not bring back stale state."""
        try:
            restore = await hibernate.restore(
                kernel, self._snapshot_path(kernel), self.limits.hibernate_timeout
            )
        except hibernate.SnapshotFailed as exc:
            why, plan = exc.args[0], exc.args[1] if len(exc.args) > 1 else []
            log.warning("%r: restore failed (%s); replacing the kernel", self, why)
            restore = hibernate.failed_restore(why, plan)
            await self._drop_kernel(
                SessionState.RESTARTING, exec_id, kill=True, why=Replaced.RESTORE_FAILED
            )
            kernel = await self.ensure_kernel()
        await self._forget_hibernation()
        log.info(
            "session %s/%s restored %d names in %.2f s; lost %s",
            self.tenant,
            self.user,
            len(restore.restored),
            restore.seconds,
            [x["name"] for x in restore.lost],
        )
        self._publish(restore.event(), exec_id)
        return restore, kernel

    async def _restore_pending(self) -> bool:
        """At the session's first execution: whether hibernated variables wait."""
        if self._restore_checked:
            return False
        self._restore_checked = True
        assert self.file_watch is not None
        try:
            return await self.file_watch.has_hibernation()
        except Exception:
            log.exception("%r: could not look for hibernated variables", self)
            return False

    def _kernel_cpu(self) -> float | None:
        """CPU time of the kernel's processes (for the disk guard); None without a kernel."""
        kernel = self.kernel
        if kernel is None or not kernel.alive:
            return None
        return cpu_seconds(kernel.launcher.processes(kernel.slot))

    def _disk_overrun(self, reason: str) -> None:
        """The work dir is over quota and growing: stop what writes."""
        log.warning("%r: %s", self, reason)
        run, scope = self._run_state, self._run_scope
        if run is not None and scope is not None:
            run.overrun = reason  # stopped as a timeout would stop it
            scope.reschedule(asyncio.get_running_loop().time())
            return
        if self.kernel is None:
            return
        # Nothing runs: a thread or a process of an earlier execution is writing.
        if self._late is not None:
            self._late.error(error_event("DiskQuotaExceeded", f"{reason}; the kernel was replaced"))
        self.pool.stats.limit_hits[LimitHit.DISK_QUOTA] += 1
        taken = self._take_kernel(SessionState.RESTARTING, None, kill=True, why=Replaced.DISK_QUOTA)
        asyncio.get_running_loop().create_task(self._discard(*taken), name="disk-replace")

    async def _watch(self, kernel: Kernel) -> None:
        exit_ = await kernel.exited
        if exit_.expected or self.kernel is not kernel:
            return
        if self._running is None:  # a running execution reports the death itself
            self._kernel_died(kernel, exit_)

    def _kernel_died(self, kernel: Kernel, exit_: KernelExit, exec_id: str | None = None) -> None:
        self.pool.stats.kernels_died += 1
        if exit_.oom:
            self.pool.stats.limit_hits[LimitHit.MEMORY] += 1
        if self.kernel is kernel:
            self.kernel = None
        self._set_state(SessionState.DEAD, exec_id)
        asyncio.get_running_loop().create_task(self.pool.discard(kernel), name="discard-dead")

    async def _work(self) -> None:
        log_context.bind(tenant=self.tenant, user=self.user)  # this task's lines name them
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            execution = self._waiting.popleft()
            self._running = execution
            try:
                with log_context.bound(execution=execution.id):
                    cell = await self._run(execution)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("execution %s failed", execution.id)
                cell = self._failed(execution, exc)
            finally:
                self._running = None
                self._run_state = None
                self._run_scope = None
            self.pool.stats.execution_finished(
                cell.status,
                cell.duration_ms / 1000,
                cell.collector.sent_bytes,
                cell.collector.truncated,
            )
            try:  # recorded before it is done: whoever waits for it finds it in the transcript
                await self.observer.execution_finished(self, cell)
            except Exception:
                log.exception("observer failed on a cell of %s/%s", self.tenant, self.user)
            finally:
                if not execution.done.done():
                    execution.done.set_result(cell)
            with log_context.bound(execution=execution.id):  # its lines name the execution
                await self._stop_strays()

    def _failed(self, execution: Execution, exc: Exception) -> Cell:
        collector = self._collector()
        seq = self.events.last_seq + 1
        emit(self._publish, collector, execution.id, error_event(type(exc).__name__, str(exc)))
        cell = Cell.aborted(execution, collector, self.last_kernel_id, CellStatus.ERROR, seq)
        if self.state is not SessionState.DEAD:
            self._set_state(SessionState.IDLE, execution.id)
        cell.last_seq = self._publish(cell.done_event(), execution.id)
        return cell

    async def _run(self, execution: Execution) -> Cell:
        self.last_activity = time.time()
        kernel = await self.ensure_kernel()
        restore = None
        if await self._restore_pending():
            self._set_state(SessionState.BUSY, execution.id)
            restore, kernel = await self._restore(kernel, execution.id)
        log_context.bind(kernel=kernel.id)  # until the execution's binding is undone
        restarted = bool(self.last_kernel_id) and kernel.id != self.last_kernel_id
        self.last_kernel_id = kernel.id
        collector = self._collector()
        started, t0 = time.time(), time.perf_counter()
        first_seq = self.events.last_seq + 1
        self._set_state(SessionState.BUSY, execution.id)
        run = Run(self._publish, execution.id, collector, kernel)
        if execution.interrupt_requested:
            run.request_interrupt()
        self._run_state = run
        before = await self.file_watch.snapshot() if self.file_watch else None
        if before is not None and self._disk is not None:
            self._disk.rebase(before.used)  # this execution's growth counts from here
        info = Started(
            execution.cell_id, execution.id, execution.code, kernel.id, first_seq, started
        )
        self.observer.execution_started(self, info)
        code = await self._with_packages(run, execution)
        if code is None:
            status = CellStatus.ERROR
            changes = self._file_changes(before)
        else:
            status, changes = await self._execute(run, kernel, code, execution, before)
        files = await self._announce_files(changes, execution.id)
        if run.exit is not None and not run.exit.expected:
            status = CellStatus.ERROR
            run.emit(error_event("KernelDied", describe_exit(run.exit.returncode, run.exit.oom)))
            self._kernel_died(kernel, run.exit, execution.id)
        elif run.exit is not None:
            status = CellStatus.ABORTED
        if run.execution_count is not None:
            self.execution_count = run.execution_count
        cell = Cell(
            id=execution.id,
            cell_id=execution.cell_id,
            code=execution.code,
            status=status,
            execution_count=run.execution_count,
            started=started,
            duration_ms=(time.perf_counter() - t0) * 1000,
            kernel_id=kernel.id,
            kernel_restarted=restarted,
            collector=collector,
            first_seq=first_seq,
            files=files,
            restore=restore,
        )
        self.last_activity = time.time()
        if self.kernel is not None and self.kernel.alive and not self._waiting:
            self._set_state(SessionState.IDLE, execution.id)
        cell.last_seq = self._publish(cell.done_event(), execution.id)
        return cell

    async def _with_packages(self, run: Run, execution: Execution) -> str | None:
        """The code to run once the packages it asks for (`install_packages`, `%pip install`
        lines) are installed and every package of the session is mounted; None (with the
        error told) when that cannot be."""
        try:
            code, from_pip = split_pip(execution.code)
            wanted = [*execution.install_packages, *from_pip]
            if wanted:
                await self.install_packages(wanted, run)
            await self.packages.mount(run.kernel)
        except (PipCommandRefused, PackageError, KernelError) as exc:  # refused, failed...
            run.emit(error_event(type(exc).__name__, str(exc)))
            return None
        return code

    async def install_packages(self, requirements: list[str], run: Run | None = None) -> list[Any]:
        """Install `requirements` for this session and mount them in its kernel; progress
        goes to `run`'s cell (as stdout) and to watchers (`package` events)."""

        if run is None and self.draining:
            raise Draining("the server is shutting down and installs nothing more")

        def progress(text: str) -> None:
            if run is not None:
                run.emit({"type": "stream", "name": "stdout", "text": f"[packages] {text}\n"})

        installed = await self.packages.install(requirements, progress)
        for item in installed:
            event = {"type": "package", **described(item)}
            self._publish(event, run.exec_id if run is not None else None)
        if self.kernel is not None and self.kernel.alive and run is None:
            await self.packages.mount(self.kernel)
        return installed

    async def _execute(
        self, run: Run, kernel: Kernel, code: str, execution: Execution, before: Any
    ) -> tuple[CellStatus, asyncio.Future[list[dict[str, Any]]] | None]:
        """Send `code` and pump its messages; then check its process limit and hand its
        request on to late output (what it left running is stopped once its `done` is
        out). Also answers the listing of the files it changed, begun (on a file worker
        for a large work dir) before the limit check."""
        budget = self.limits.budget()
        forks_refused = kernel.process_limit_hits()
        msg_id = kernel.execute(code)
        queue = kernel.listen(msg_id, budget)
        status = await self._pump_in_time(run, queue, execution)
        run.finish()
        if run.overrun:  # the disk guard stopped it (or it ended as the guard fired)
            status = CellStatus.ERROR
            replaced = "; the kernel was replaced" if kernel is not self.kernel else ""
            run.emit(error_event("DiskQuotaExceeded", run.overrun + replaced))
            self.pool.stats.limit_hits[LimitHit.DISK_QUOTA] += 1
        changes = self._file_changes(before)
        if kernel is self.kernel and kernel.alive:
            await self._after_execution(kernel, run, forks_refused)
            if run.overrun is None and kernel is not self.kernel:
                status = CellStatus.ERROR  # replaced for its process limit
        if kernel is self.kernel and kernel.alive and self._late is not None:
            self._late.adopt(msg_id, execution.id, execution.cell_id, run.collector, budget)
            while not queue.empty():  # what arrived since the pump ended is late output
                self._late.queue.put_nowait(queue.get_nowait())
        else:
            kernel.unlisten(msg_id)
        return status, changes

    async def _pump_in_time(
        self, run: Run, queue: asyncio.Queue[Any], execution: Execution
    ) -> CellStatus:
        """The execution's pump under its timeout (which the disk guard may bring forward);
        on expiry the kernel is interrupted, and replaced if it ignores that."""
        try:
            async with asyncio.timeout(execution.timeout) as scope:
                self._run_scope = scope
                return await run.pump(queue)
        except TimeoutError:
            pass
        finally:
            self._run_scope = None
        kernel = run.kernel
        kernel.interrupt()
        try:  # the disk guard may cut the grace short too: the execution still runs
            async with asyncio.timeout(self.limits.interrupt_grace) as scope:
                self._run_scope = scope
                await run.pump(queue)
        except TimeoutError:
            if run.overrun is None:
                log.warning("%r: kernel ignored interrupt after timeout; replacing", self)
            why = Replaced.TIMEOUT if run.overrun is None else Replaced.DISK_QUOTA
            if kernel is self.kernel:
                await self._drop_kernel(SessionState.RESTARTING, execution.id, why=why)
        finally:
            self._run_scope = None
        return CellStatus.TIMEOUT

    async def _after_execution(self, kernel: Kernel, run: Run, forks_refused: int) -> None:
        """Replace a kernel that hit its process limit (a fork storm leaves copies of the
        kernel that the limit keeps alive); else have what the execution left running
        stopped once its `done` is out (`_stop_strays`)."""
        if self.limits.stop_strays:
            self._strays_of = kernel
        if kernel.process_limit_hits() > forks_refused:
            run.emit(
                error_event(
                    "ProcessLimitExceeded",
                    "the code started more processes or threads than the kernel's limit; "
                    "the kernel was replaced and variables from before are gone",
                )
            )
            self.pool.stats.limit_hits[LimitHit.PIDS] += 1
            await self._drop_kernel(
                SessionState.RESTARTING, run.exec_id, kill=True, why=Replaced.PROCESS_LIMIT
            )

    async def _stop_strays(self) -> None:
        """Stop what the last execution left running: after its `done` is published and
        before the next execution starts. Nothing it stops can be in its output or seen
        by the next code; a client waiting for `done` does not wait for the look through
        the kernel's processes (0.1 ms of every execution without a sandbox: a /proc read
        per kernel thread)."""
        kernel, self._strays_of = self._strays_of, None
        if kernel is None or kernel is not self.kernel:
            return  # replaced since: its processes went with it
        log_context.bind(kernel=kernel.id)  # until the caller's binding is undone
        await asyncio.sleep(0)  # the sockets' writes of `done`, queued already, go first
        stopped = await kernel.stop_strays()
        if stopped:
            log.info("%r: stopped %d processes the execution left running", self, stopped)

    def _file_changes(self, before: Any) -> asyncio.Future[list[dict[str, Any]]] | None:
        if self.file_watch is None or before is None:
            return None
        future = asyncio.ensure_future(self.file_watch.changes(before))
        # Retrieved here too, for when the execution is cancelled before it awaits it.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    async def _announce_files(
        self, changes: asyncio.Future[list[dict[str, Any]]] | None, exec_id: str
    ) -> list[dict[str, Any]]:
        if changes is None:
            return []
        try:
            files = await changes
        except Exception:
            log.exception("%r: could not list changed files", self)
            return []
        for change in files:
            self._publish({"type": "file", **change}, exec_id)
        return files
