"""The durable transcript (transcript/transcript.py) on a real SQLite store: events, notes
and session records written behind and read back after a flush, text the store refuses
stored repaired, and cells a crashed server left running rebuilt from their events.

What sessions hand over during executions is tested through the server
(tests/server/test_transcript.py), with real kernels.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest

from tests.polling import until
from transcript.store.base import CellRecord, SessionRecord
from transcript.store.sqlite import SqliteStore
from transcript.transcript import Transcript

LONE = json.loads('"\\ud800"')  # a lone surrogate, as a peer's JSON can produce


@pytest.fixture
async def transcript(store: SqliteStore) -> AsyncIterator[Transcript]:
    t = Transcript(store)
    t.start()
    yield t
    await t.stop()


def event(seq: int, exec_id: str, kind: str = "stream", **body: object) -> tuple[int, str]:
    return seq, json.dumps({"type": kind, "seq": seq, "id": exec_id, **body})


async def test_a_new_session_continues_from_what_was_handed_over(transcript: Transcript) -> None:
    first = await transcript.resume_for("t", "u")
    assert (first.last_seq, first.last_kernel_id) == (0, "")
    assert first.sink is not None
    first.sink(*event(1, "e1", name="stdout", text="a\n"))
    first.sink(*event(2, "e1", "done", status="ok"))
    transcript.save_session(SessionRecord("t", "u", 1.0, 2.0, 1, "idle", kernel_id="k-1"))
    again = await transcript.resume_for("t", "u")  # flushes before it reads
    assert (again.last_seq, again.last_kernel_id) == (2, "k-1")
    assert [seq for seq, _ in await transcript.replay("t", "u", 0, 10)] == [1, 2]
    assert await transcript.replay("t", "u", 1, 2) == []
    assert (await transcript.session("t", "u")) is not None
    assert [r.user for r in await transcript.sessions("t")] == ["u"]


async def test_notes_are_cells_of_the_transcript(transcript: Transcript) -> None:
    transcript.add_note("t", "u", "# Question", "n1", seq=1)
    transcript.add_note("t", "u", "After the restart", "n2", seq=5)
    cells = await transcript.cells("t", "u")
    assert [(c.id, c.kind, c.source, c.first_seq) for c in cells] == [
        ("n1", "markdown", "# Question", 1),
        ("n2", "markdown", "After the restart", 5),
    ]


async def test_text_the_store_refuses_is_stored_repaired_and_alone(
    transcript: Transcript, caplog: pytest.LogCaptureFixture
) -> None:
    resume = await transcript.resume_for("t", "u")
    assert resume.sink is not None
    with caplog.at_level(logging.WARNING, logger="transcript.transcript"):
        # One batch: the bad items fail it, and are then written one by one.
        transcript.add_note("t", "u", "fine", "n1", seq=1)
        transcript.add_note("t", "u", f"bad {LONE} note", "n2", seq=2)
        resume.sink(3, json.dumps({"type": "stream", "text": f"bad {LONE}"}, ensure_ascii=False))
        resume.sink(*event(4, "e1", text="fine"))
        await transcript.flush()
    cells = await transcript.cells("t", "u")
    assert [c.source for c in cells] == ["fine", "bad \ufffd note"]
    events = await transcript.replay("t", "u", 0, 10)
    assert [seq for seq, _ in events] == [3, 4]
    assert json.loads(events[0][1])["text"] == "bad \ufffd"
    assert caplog.text.count("after repairing its text") == 2


async def test_delete_forgets_the_transcript_and_the_record(transcript: Transcript) -> None:
    resume = await transcript.resume_for("t", "u")
    assert resume.sink is not None
    resume.sink(*event(1, "e1"))
    transcript.add_note("t", "u", "note", "n1", seq=2)
    transcript.save_session(SessionRecord("t", "u", 1.0, 2.0))
    await transcript.delete("t", "u")
    assert await transcript.cells("t", "u") == []
    assert await transcript.replay("t", "u", 0, 10) == []
    assert await transcript.session("t", "u") is None


async def test_stop_writes_everything_handed_over(store: SqliteStore) -> None:
    transcript = Transcript(store)
    transcript.start()
    for i in range(50):
        transcript.add_note("t", "u", f"note {i}", f"n{i}", seq=i + 1)
    await transcript.stop()
    assert len(await store.list_cells("t", "u")) == 50


async def test_cells_a_crash_left_running_are_rebuilt_from_their_events(
    store: SqliteStore,
) -> None:
    running = CellRecord(
        "t", "u", "c1", "code", "long()", 1.0, status="running", metadata={"id": "e1"}, first_seq=3
    )
    finished = CellRecord("t", "u", "c0", "code", "1", 0.5, status="ok", metadata={"id": "e0"})
    await store.put_cells([finished, running])
    await store.append_events(
        "t",
        "u",
        [
            event(1, "e0", name="stdout", text="before\n"),
            event(2, "e0", "done", status="ok"),
            event(3, "e1", "status", state="busy"),
            event(4, "e1", name="stdout", text="partial\n"),
            event(5, "other", name="stdout", text="not mine\n"),
            event(6, "e1", "display", data={"text/plain": "<Figure>"}, metadata={}),
        ],
    )
    transcript = Transcript(store)
    assert await transcript.recover() == 1
    assert await store.running_cells() == []
    c0, c1 = await store.list_cells("t", "u")
    assert (c0.status, c0.outputs) == ("ok", [])  # finished cells are left alone
    assert c1.status == "interrupted"
    assert c1.outputs == [
        {"output_type": "stream", "name": "stdout", "text": "partial\n"},
        {"output_type": "display_data", "data": {"text/plain": "<Figure>"}, "metadata": {}},
    ]
    assert await transcript.recover() == 0


async def test_a_lone_item_lingers_for_company_but_never_keeps_a_reader_waiting(
    store: SqliteStore,
) -> None:
    """A write that finds nothing else waiting waits `linger` for the rest of its
    execution; a reader's flush cuts that short."""
    transcript = Transcript(store, linger=3600)  # nothing would be written for an hour
    transcript.start()
    try:
        transcript.save_session(SessionRecord("t", "u", 1.0, 2.0, 1, "idle"))
        async with asyncio.timeout(10):
            assert (await transcript.session("t", "u")) is not None  # flushes
        transcript.save_session(SessionRecord("t", "v", 1.0, 2.0, 1, "idle"))
        transcript.save_session(SessionRecord("t", "w", 1.0, 2.0, 1, "idle"))
        async with asyncio.timeout(10):
            assert {r.user for r in await transcript.sessions("t")} == {"u", "v", "w"}
    finally:
        async with asyncio.timeout(10):
            await transcript.stop()  # hurries too
    lingering = Transcript(store, linger=1.0)
    lingering.start()
    try:
        lingering.save_session(SessionRecord("t", "x", 1.0, 2.0, 1, "idle"))
        assert await store.get_session("t", "x") is None  # still lingering
        await until(lambda: lingering.backlog == 0, timeout=10)
        assert await store.get_session("t", "x") is not None  # written without any reader
    finally:
        await lingering.stop()
