"""LateOutput: what threads print after their execution finished is published as that
execution's late events, under what is left of its caps, and appended to its cell.

With a real kernel (`LocalLauncher`, our start-up code pins threads to the execution that
started them) for the path from the kernel, and recorded messages put on the late queue
for the caps, the budget marker and how many executions stay listened to.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kernels import late as late_module
from kernels.kernel import Dropped, Kernel
from kernels.late import LateOutput
from kernels.outputs import OutputCollector
from tests.kernels.driving import execute
from tests.polling import until


class Sink:
    """What the session gives LateOutput: its publish and the cell's outputs hook."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.appended: list[tuple[str, list[dict[str, Any]]]] = []

    def publish(self, event: dict[str, Any], exec_id: str) -> int:
        self.events.append((exec_id, event))
        return len(self.events)

    def append(self, cell_id: str, outputs: list[dict[str, Any]]) -> None:
        self.appended.append((cell_id, outputs))

    def text(self, exec_id: str) -> str:
        return "".join(e.get("text", "") for i, e in self.events if i == exec_id)

    def appended_text(self, cell_id: str) -> str:
        return "".join(o.get("text", "") for c, outs in self.appended if c == cell_id for o in outs)


@pytest.fixture
async def sink_and_late(kernel: Kernel) -> AsyncIterator[tuple[Sink, LateOutput]]:
    sink = Sink()
    late = LateOutput(kernel, sink.publish, sink.append)
    yield sink, late
    await late.close()


def fresh() -> OutputCollector:
    return OutputCollector(client_cap=10_000, text_cap=10_000)


STARTS_A_THREAD = textwrap.dedent(
    """
    import threading
    go_{tag} = threading.Event()
    def work_{tag}():
        go_{tag}.wait()
        for i in range(3):
            print("{tag}", i, flush=True)
    threading.Thread(target=work_{tag}).start()
    """
)


async def test_a_threads_output_after_its_execution_lands_in_that_execution(
    kernel: Kernel, sink_and_late: tuple[Sink, LateOutput]
) -> None:
    sink, late = sink_and_late
    first = await execute(kernel, STARTS_A_THREAD.format(tag="one"))
    assert first.reply["status"] == "ok" and first.stdout == ""
    late.adopt(first.msg_id, "exec-1", "cell-1", fresh(), None)
    second = await execute(kernel, "go_one.set()\nprint('second')")
    assert second.stdout == "second\n"  # the thread's lines are not the second execution's
    await until(lambda: sink.text("exec-1").count("one") == 3)
    assert sink.text("exec-1") == "one 0\none 1\none 2\n"
    assert all(e["late"] is True and e["type"] == "stream" for _, e in sink.events)
    assert {exec_id for exec_id, _ in sink.events} == {"exec-1"}
    await until(lambda: sink.appended_text("cell-1") == "one 0\none 1\none 2\n")  # batched
    assert {cell for cell, _ in sink.appended} == {"cell-1"}


def stream(msg_id: str, text: str, name: str = "stdout") -> tuple[str, dict[str, Any]]:
    """A recorded iopub stream message answering request `msg_id`."""
    msg = {
        "msg_type": "stream",
        "parent_header": {"msg_id": msg_id},
        "content": {"name": name, "text": text},
    }
    return "iopub", msg


async def test_late_output_gets_only_what_is_left_of_the_caps(
    sink_and_late: tuple[Sink, LateOutput],
) -> None:
    sink, late = sink_and_late
    spent = OutputCollector(client_cap=200, text_cap=10_000)
    spent.accept({"type": "stream", "name": "stdout", "text": "x" * 50})  # during the run
    late.adopt("req-caps", "exec-caps", "cell-caps", spent, None)
    late.queue.put_nowait(stream("req-caps", "y" * 200))
    await until(lambda: len(sink.events) >= 2)
    head, marker = (e for _, e in sink.events)
    left = 200 - (50 + 64) - 64  # the cap less what was sent, less this event's overhead
    assert head["text"] == "y" * left and head["late"] is True
    assert "output truncated" in marker["text"] and marker["late"] is True
    late.queue.put_nowait(stream("req-caps", "more"))
    late.queue.put_nowait(stream("someone-else", "not ours"))
    late.queue.put_nowait(("shell", stream("req-caps", "a reply")[1]))
    await late.close()  # writes what is pending
    assert len(sink.events) == 2  # truncated stays truncated; others' output is ignored
    text = "y" * left + marker["text"]  # one stream: the marker goes where the text went
    assert sink.appended == [
        ("cell-caps", [{"output_type": "stream", "name": "stdout", "text": text}])
    ]


async def test_a_spent_budget_is_marked_once_as_truncation(
    sink_and_late: tuple[Sink, LateOutput],
) -> None:
    sink, late = sink_and_late
    late.adopt("req-budget", "exec-budget", "cell-budget", fresh(), None)
    dropped = Dropped("iopub", "stream", 5000, "budget", "req-budget")
    late.queue.put_nowait(dropped)
    late.queue.put_nowait(dropped)
    late.queue.put_nowait(Dropped("iopub", "stream", 5000, "budget", "unknown-request"))
    await until(lambda: sink.events)
    await late.close()
    assert len(sink.events) == 1
    exec_id, marker = sink.events[0]
    assert exec_id == "exec-budget" and "output truncated" in marker["text"]
    assert sink.appended_text("cell-budget") == marker["text"]


async def test_only_the_latest_executions_are_kept(
    sink_and_late: tuple[Sink, LateOutput],
) -> None:
    sink, late = sink_and_late
    for i in range(late_module.KEEP + 1):
        late.adopt(f"req-{i}", f"exec-{i}", f"cell-{i}", fresh(), None)
    late.queue.put_nowait(stream("req-0", "forgotten"))  # the oldest, over KEEP ago
    late.queue.put_nowait(stream("req-1", "kept"))
    await until(lambda: sink.events)
    await late.close()
    assert [(exec_id, e["text"]) for exec_id, e in sink.events] == [("exec-1", "kept")]
    assert sink.appended == [
        ("cell-1", [{"output_type": "stream", "name": "stdout", "text": "kept"}])
    ]
