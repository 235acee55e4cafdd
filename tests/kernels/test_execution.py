"""The execution pump, driven by recorded kernel messages (no kernel needed)."""

import asyncio

from kernels.execution import Run
from kernels.outputs import OutputCollector
from tests.polling import until


class Recorder:
    """Stands in for the session's publish and the kernel's interrupt; records both."""

    def __init__(self):
        self.events = []
        self.interrupts = 0

    def _publish(self, event, exec_id):
        self.events.append({**event, "id": exec_id})
        return len(self.events)

    def interrupt(self):
        self.interrupts += 1


def msg(channel, msg_type, **content):
    return channel, {"msg_type": msg_type, "content": content}


def run_with(messages, interrupt=False):
    rec = Recorder()
    run = Run(rec._publish, "e1", OutputCollector(10_000, 10_000), rec)  # type: ignore[arg-type]
    if interrupt:
        run.request_interrupt()
    queue = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    return rec, run, queue


async def test_a_normal_execution_ends_on_reply_and_idle():
    rec, run, queue = run_with(
        [
            msg("iopub", "status", execution_state="busy"),
            msg("iopub", "execute_input", execution_count=4, code="1"),
            msg(
                "iopub", "execute_result", execution_count=4, data={"text/plain": "1"}, metadata={}
            ),
            msg("shell", "execute_reply", status="ok", execution_count=4),
            msg("iopub", "status", execution_state="idle"),
        ]
    )
    assert await run.pump(queue) == "ok"
    assert run.execution_count == 4 and [e["type"] for e in rec.events] == ["result"]


async def test_an_interrupt_waits_for_execute_input():
    rec, run, queue = run_with(
        [msg("iopub", "execute_input", execution_count=1, code="x")], interrupt=True
    )
    assert rec.interrupts == 0  # not begun: holding it
    pump = asyncio.ensure_future(run.pump(queue))
    await until(lambda: rec.interrupts == 1)  # sent once the kernel began the code
    pump.cancel()
    run.finish()


async def test_a_request_the_kernel_dropped_ends_as_interrupted():
    # ipykernel: a SIGINT before the user's code starts aborts the handler, which sends
    # idle and no reply. The execution must end, not wait for its timeout.
    rec, run, queue = run_with(
        [
            msg("iopub", "status", execution_state="busy"),
            msg("iopub", "execute_input", execution_count=2, code="x"),
            msg("iopub", "status", execution_state="idle"),
        ],
        interrupt=True,
    )
    status = await asyncio.wait_for(run.pump(queue), 5)
    run.finish()
    assert status == "error"
    assert rec.events[-1]["ename"] == "KeyboardInterrupt"
    assert "before the code started" in rec.events[-1]["evalue"]


async def test_a_reply_arriving_after_idle_is_still_taken():
    _, run, queue = run_with(
        [
            msg("iopub", "status", execution_state="busy"),
            msg("iopub", "status", execution_state="idle"),
        ]
    )
    asyncio.get_running_loop().call_later(
        0.2, queue.put_nowait, msg("shell", "execute_reply", status="ok", execution_count=1)
    )
    assert await run.pump(queue) == "ok"


def test_stream_events_reuse_the_kernels_encoding_and_decode_identically():
    import json

    from jupyter_client.session import json_packer

    from kernels.events import EventLog
    from kernels.execution import stream_members

    log = EventLog(100, 10_000_000, 10_000_000)
    for text in ["plain\n", 'quotes " and \\ back\n\ttab', "ünïcødé ✓ 🚀\n", "\x00\x1b[31mred"]:
        content = {"name": "stdout", "text": text}
        members = stream_members(json_packer(content), content, "exec-1")
        assert members is not None
        spliced = {"type": "stream", **content, "id": "exec-1"}
        log.publish(spliced, members)
        reference = {"type": "stream", **content, "id": "exec-1"}
        log.publish(reference)
        a, b = log.replay(log.last_seq - 2)
        assert json.loads(a) == {**json.loads(b), "seq": json.loads(a)["seq"]}
        assert json.loads(a)["text"] == text
    assert (
        stream_members(
            b'{"name": "stdout", "text": "x", "extra": 1}',
            {"name": "stdout", "text": "x", "extra": 1},
            "e",
        )
        is None
    )
    assert stream_members(b"\xff\xfe", {"name": "stdout", "text": "x"}, "e") is None


def test_the_rest_answer_carries_a_plain_text_traceback():
    from kernels.execution import plain_traceback

    error = {
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "traceback": [
            "\x1b[0;31m---------\x1b[0m",
            "Cell \x1b[0;32mIn[1], line 1\x1b[0m\n\x1b[0;32m----> 1\x1b[0m 1/0",
            "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
        ],
    }
    text = plain_traceback(error)
    assert "\x1b" not in text and "Cell In[1], line 1" in text
    assert text.endswith("ZeroDivisionError: division by zero")
    assert plain_traceback({"ename": "KernelDied", "evalue": "gone", "traceback": []}) == (
        "KernelDied: gone"
    )
