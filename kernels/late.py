"""Late output: what an execution's threads print after the execution has finished.

The kernel's start-up code pins every thread to the execution that started it, so such
output still names its execution (its parent request). When an execution finishes, its
request is handed to this kernel's `LateOutput`, which keeps listening for the latest
`KEEP` executions: late output is published as that execution's events (`"late": true`)
under what is left of its caps, and appended to its cell in batches. Nothing a thread
prints between executions is lost or lands in the wrong cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from .execution import emit
from .kernel import Dropped, Kernel, KernelExit, OutputBudget
from .outputs import (
    TRUNCATION_MARKER,
    MalformedMessage,
    OutputCollector,
    event_from_message,
)

log = logging.getLogger(__name__)

KEEP = 32  # finished executions per kernel still listened to
FLUSH_DELAY = 0.5  # seconds of late output gathered into one append to the cell

Publish = Callable[..., int]
AppendOutputs = Callable[[str, list[dict[str, Any]]], None]  # (cell_id, outputs)


@dataclass
class _Finished:
    exec_id: str
    cell_id: str
    collector: OutputCollector  # what is left of the execution's caps; late outputs only
    pending: bool = False


class LateOutput:
    """Late output of one kernel's finished executions (see the module docstring)."""

    def __init__(self, kernel: Kernel, publish: Publish, append: AppendOutputs) -> None:
        self.kernel = kernel
        self.publish = publish
        self.append = append
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._finished: OrderedDict[str, _Finished] = OrderedDict()
        self._flush: asyncio.TimerHandle | None = None
        self._task = asyncio.get_running_loop().create_task(self._pump(), name="late-output")

    def adopt(
        self,
        msg_id: str,
        exec_id: str,
        cell_id: str,
        spent: OutputCollector,
        budget: OutputBudget | None,
    ) -> None:
        """Keep listening to a finished execution's request, under its remaining caps."""
        left = OutputCollector(
            max(0, spent.client_cap - spent.sent_bytes),
            spent.text_cap,
            max_events=max(0, spent.max_events - spent.events),
        )
        left.truncated = spent.truncated
        self._finished[msg_id] = _Finished(exec_id, cell_id, left)
        self.kernel.listen(msg_id, budget, queue=self.queue)
        while len(self._finished) > KEEP:
            old, _ = self._finished.popitem(last=False)
            self.kernel.unlisten(old)

    async def close(self) -> None:
        """Write what is pending and stop listening."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._write()
        for msg_id in self._finished:
            self.kernel.unlisten(msg_id)
        self._finished.clear()

    async def _pump(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, KernelExit):
                return
            try:
                self._take(item)
            except Exception:
                log.exception("kernel %s: late output not taken", self.kernel.id[:12])

    def _take(self, item: Any) -> None:
        if isinstance(item, Dropped):
            finished = self._finished.get(item.parent)
            if finished is not None and not finished.collector.truncated:
                cap = finished.collector.client_cap
                marker = TRUNCATION_MARKER.format(what="output", limit=cap)
                self._publish_late(finished, finished.collector.truncate(marker), finished.exec_id)
            return
        channel, msg = item
        finished = self._finished.get(msg["parent_header"].get("msg_id", ""))
        if finished is None or channel != "iopub":
            return
        try:
            event = event_from_message(msg["msg_type"], msg["content"])
        except MalformedMessage:
            return
        if event is not None:
            self._send(finished, event)

    def error(self, event: dict[str, Any]) -> None:
        """An error the server reports about the latest finished execution (its kernel is
        about to be replaced for what a thread of it did), written to its cell at once."""
        if self._finished:
            self._send(next(reversed(self._finished.values())), event)
            self._write()

    def _send(self, finished: _Finished, event: dict[str, Any]) -> None:
        emit(partial(self._publish_late, finished), finished.collector, finished.exec_id, event)

    def _publish_late(
        self, finished: _Finished, event: dict[str, Any], exec_id: str, *_: Any
    ) -> int:
        event["late"] = True
        finished.pending = True
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._write)
        return self.publish(event, exec_id)

    def _write(self) -> None:
        """Append each execution's gathered late outputs to its cell."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        for finished in self._finished.values():
            if finished.pending:
                finished.pending = False
                outputs = finished.collector.take_outputs()
                if outputs:
                    self.append(finished.cell_id, outputs)
