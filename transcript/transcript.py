"""The durable transcript: every event and cell of every session, written behind.

Sessions hand events and cells to `Transcript` synchronously; one owned task writes them to
the store in batches, in order. Readers (`replay`, notebook export) flush first, so they
see everything published before they asked.

A write that finds nothing else waiting waits `linger` (2 ms) for the rest of its
execution's items, unless a reader flushes. An execution's last items (its cell, its
`done`) are handed over just as its client reads `done` and sends its next code; written at
once, the store's thread took CPU from that client and from the server's loop on a 2-core
machine (0.1-0.2 ms of every round trip); written 2 ms later, they are written while the
next execution's kernel works, and in one transaction with its first items.

At start, cells a crashed server left running are rebuilt from their stored events and
marked `interrupted`.

Two kinds of failure, told apart. A store that cannot be reached (`StoreUnavailable`: a
network store that is down) fails every item alike and will take them later: the batch is
retried with backoff, in order, and what sessions hand over meanwhile waits behind it, up
to `buffer` items; the transcript reports itself degraded, and readers fail at once (503)
rather than wait. Past the buffer, items are dropped, counted, logged and reported by
`health()`: never silently. An item the store refuses (text it cannot encode) fails alone:
the batch is written item by item, such an item once more repaired, else dropped and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from typing import Any

from kernels.execution import Cell, Started
from kernels.observer import Resume, SessionView
from kernels.outputs import OutputCollector
from kernels.states import CellStatus
from kernels.stats import Histogram
from kernels.storable import clean, clean_text

from .store.base import Batch, CellRecord, SessionRecord, Store, StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 2000
LINGER = 0.002  # seconds a lone item waits for company (see the module's docstring)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
BUFFER = 200_000  # items waiting for the store, at most
RETRY_FIRST, RETRY_MAX = 0.05, 2.0  # seconds between tries of an unreachable store
STOP_GRACE = 10.0  # seconds `stop` gives an unreachable store to come back
Op = tuple[str, Any]


class Transcript:
    def __init__(self, store: Store, buffer: int = BUFFER, linger: float = LINGER) -> None:
        self.store = store
        self.buffer = buffer
        self.linger = linger
        self._hurry = asyncio.Event()  # a reader waits: no lingering until the queue is empty
        self._queue: asyncio.Queue[Op] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.write_seconds = Histogram(WRITE_BUCKETS)  # one per batch written
        self._writing = 0  # items of the batch being written
        self._unreachable_since: float | None = None
        self._lost = asyncio.Event()  # set while the store cannot be reached
        self._dropped = 0  # items the full buffer refused, since start
        self._last_error = ""

    @property
    def backlog(self) -> int:
        """Items handed over and not yet in the store."""
        return self._queue.qsize() + self._writing

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._write(), name="transcript")

    async def stop(self) -> None:
        self._hurry.set()
        try:
            async with asyncio.timeout(STOP_GRACE if self.degraded else None):
                await self._queue.join()
        except TimeoutError:
            log.error(
                "transcript: %d items not written: the store stayed unreachable (%s)",
                self._queue.qsize(),
                self._last_error,
            )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def flush(self) -> None:
        """Until everything handed over so far is in the store; `StoreUnavailable` at once
        while the store cannot be reached (a reader then fails instead of hanging)."""
        self._hurry.set()
        join = asyncio.ensure_future(self._queue.join())
        try:
            while not join.done():
                self._raise_if_degraded()
                lost = asyncio.ensure_future(self._lost.wait())
                await asyncio.wait([join, lost], return_when=asyncio.FIRST_COMPLETED)
                lost.cancel()
        finally:
            join.cancel()

    @property
    def degraded(self) -> bool:
        return self._unreachable_since is not None

    def health(self) -> dict[str, Any]:
        """{"state": "ok"|"degraded", "held", "dropped"[, "since", "error"]}: whether the
        store takes writes, items waiting for it, items the full buffer dropped."""
        report: dict[str, Any] = {
            "state": "degraded" if self.degraded else "ok",
            "held": self._queue.qsize(),
            "dropped": self._dropped,
        }
        if self._unreachable_since is not None:
            report["since"] = self._unreachable_since
            report["error"] = self._last_error
        return report

    def _raise_if_degraded(self) -> None:
        if self.degraded:
            raise StoreUnavailable(f"the store is unreachable: {self._last_error}")

    def _put(self, op: Op) -> None:
        if self._queue.qsize() >= self.buffer:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 10_000 == 0:
                log.error(
                    "transcript: buffer of %d items full, %d items dropped so far (store: %s)",
                    self.buffer,
                    self._dropped,
                    "unreachable" if self.degraded else "slow",
                )
            return
        self._queue.put_nowait(op)

    # -- what sessions hand over -----------------------------------------------------------

    async def resume_for(self, tenant: str, user: str) -> Resume:
        """For a new session: the seq to continue from, the kernel of the user's last
        execution (so the next one knows whether it runs on another), and the event sink."""
        await self.flush()
        last = await self.store.last_seq(tenant, user)
        record = await self.store.get_session(tenant, user)

        def sink(seq: int, encoded: str) -> None:
            self._put(("event", (tenant, user, seq, encoded)))

        if record is None:
            return Resume(last, sink)
        return Resume(last, sink, record.kernel_id, list(record.packages))

    def cell_started(self, session: SessionView, info: Started) -> None:
        record = CellRecord(
            session.tenant,
            session.user,
            info.cell_id,
            "code",
            info.code,
            info.started,
            status=CellStatus.RUNNING,
            metadata={"started": info.started, "kernel_id": info.kernel_id, "id": info.exec_id},
            first_seq=info.first_seq,
        )
        self._put(("cell", record))

    def cell_finished(self, session: SessionView, cell: Cell) -> None:
        self._put(("cell", cell_record(session.tenant, session.user, cell)))

    def outputs_added(
        self, session: SessionView, cell_id: str, outputs: list[dict[str, Any]]
    ) -> None:
        self._put(("outputs", (session.tenant, session.user, cell_id, outputs)))

    def save_session(self, record: SessionRecord) -> None:
        self._put(("session", record))

    def add_note(self, tenant: str, user: str, markdown: str, note_id: str, seq: int) -> None:
        record = CellRecord(tenant, user, note_id, "markdown", markdown, time.time(), first_seq=seq)
        self._put(("cell", record))

    # -- reading back ----------------------------------------------------------------------

    async def replay(
        self, tenant: str, user: str, after: int, before: int
    ) -> list[tuple[int, str]]:
        await self.flush()
        return await self.store.events_between(tenant, user, after, before)

    async def session(self, tenant: str, user: str) -> SessionRecord | None:
        await self.flush()
        return await self.store.get_session(tenant, user)

    async def sessions(self, tenant: str) -> list[SessionRecord]:
        await self.flush()
        return await self.store.list_sessions(tenant)

    async def cells(self, tenant: str, user: str) -> list[CellRecord]:
        await self.flush()
        return await self.store.list_cells(tenant, user)

    async def expired_sessions(self, before: float) -> list[SessionRecord]:
        """Sessions whose last activity is older than `before`."""
        await self.flush()
        return await self.store.expired_sessions(before)

    async def delete(self, tenant: str, user: str) -> None:
        """Forget the session: its transcript and its record."""
        await self.flush()
        await self.store.delete_transcript(tenant, user)
        await self.store.delete_session(tenant, user)

    async def recover(self, which: Callable[[str, str], Awaitable[bool]] | None = None) -> int:
        """Cells left `running` by a server that died: outputs from events, `interrupted`.
        `which(tenant, user)` picks the users (replicas: those no live replica runs)."""
        cells = await self.store.running_cells()
        if which is not None:
            cells = [c for c in cells if await which(c.tenant, c.user)]
        for cell in cells:
            bodies = await self.store.events_between(
                cell.tenant, cell.user, cell.first_seq - 1, 2**62
            )
            collector = OutputCollector(client_cap=2**62, text_cap=2**62)
            for _seq, body in bodies:
                event = json.loads(body)
                if event.get("id") != cell.metadata.get("id"):
                    continue
                if event["type"] == "done":
                    break
                collector.accept(event)
            cell.outputs = collector.outputs
            cell.status = CellStatus.INTERRUPTED
        if cells:
            await self.store.put_cells(cells)
            log.warning("recovered %d cells interrupted by a server stop", len(cells))
        return len(cells)

    async def _write(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._writing = 1  # handed over, not yet stored: part of the backlog
            if self.linger and self._queue.empty() and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.linger):
                        await self._hurry.wait()
            while not self._queue.empty() and len(batch) < BATCH:
                batch.append(self._queue.get_nowait())
            t0, self._writing = time.perf_counter(), len(batch)
            try:
                if not await self._write_until_stored(batch):
                    await self._write_each(batch)
            finally:
                self.write_seconds.observe(time.perf_counter() - t0)
                self._writing = 0
                for _ in batch:
                    self._queue.task_done()
                if self._queue.empty():
                    self._hurry.clear()

    async def _write_until_stored(self, batch: list[Op]) -> bool:
        """Write `batch`, retrying with backoff while the store cannot be reached; False when
        the store refused it (some item of it cannot be stored)."""
        delay = RETRY_FIRST
        while True:
            try:
                await self._write_batch(batch)
            except StoreUnavailable as exc:
                self._went_away(str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            except Exception:
                return False
            self._came_back()
            return True

    def _went_away(self, error: str) -> None:
        self._last_error = error
        if self._unreachable_since is None:
            self._unreachable_since = time.time()
            self._lost.set()
            log.error("transcript: the store is unreachable (%s); holding writes", error)

    def _came_back(self) -> None:
        if self._unreachable_since is not None:
            log.warning(
                "transcript: the store is back after %.1f s; writing %d held items",
                time.time() - self._unreachable_since,
                self._queue.qsize(),
            )
            self._unreachable_since = None
            self._lost.clear()

    async def _write_each(self, batch: list[Op]) -> None:
        """A batch was refused: write its items one by one, so a bad item fails alone. An
        item that fails is written once more with its text made storable, else dropped."""
        for kind, item in batch:
            if await self._write_until_stored([(kind, item)]):
                continue
            if await self._write_until_stored([(kind, _storable(kind, item))]):
                log.warning(
                    "transcript: stored a %s of %s after repairing its text", kind, _who(item)
                )
            else:
                log.error("transcript: dropped a %s of %s that cannot be stored", kind, _who(item))

    async def _write_batch(self, batch: list[Op]) -> None:
        grouped = Batch()
        sessions: dict[tuple[str, str], SessionRecord] = {}  # the latest of each wins
        for kind, item in batch:
            if kind == "event":
                tenant, user, seq, encoded = item
                grouped.events.setdefault((tenant, user), []).append((seq, encoded))
            elif kind == "session":
                sessions[(item.tenant, item.user)] = item
            elif kind == "outputs":
                grouped.outputs.append(item)
            else:
                grouped.cells.append(item)
        grouped.sessions = list(sessions.values())
        await self.store.write_batch(grouped)


def _who(item: Any) -> str:
    if isinstance(item, tuple):
        return f"{item[0]}/{item[1]}"
    return f"{item.tenant}/{item.user}"


def _storable(kind: str, item: Any) -> Any:
    """`item` with every text made storable (see `kernels.storable`)."""
    if kind == "event":
        tenant, user, seq, encoded = item
        return tenant, user, seq, clean_text(encoded)
    if kind == "outputs":
        return clean(item)
    return replace(item, **{f.name: clean(getattr(item, f.name)) for f in fields(item)})


def cell_record(tenant: str, user: str, cell: Cell) -> CellRecord:
    return CellRecord(
        tenant,
        user,
        cell.cell_id,
        "code",
        cell.code,
        cell.started,
        status=cell.status,
        execution_count=cell.execution_count,
        outputs=cell.collector.outputs,
        metadata={
            "started": cell.started,
            "duration_ms": round(cell.duration_ms, 3),
            "kernel_id": cell.kernel_id,
            "kernel_restarted": cell.kernel_restarted,
            "truncated": cell.collector.truncated,
            "id": cell.id,
            **({} if cell.restore is None else {"restored": cell.restore.record()}),
        },
        first_seq=cell.first_seq,
    )
