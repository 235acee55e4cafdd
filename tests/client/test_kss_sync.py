"""The blocking facade, driven from a worker thread (the server runs on the test's loop)."""

from __future__ import annotations

import asyncio
import json

import pytest
from client_faults import dead_url
from kss_client import EventType, KssError, SyncClient

from tests.conftest import KEY, RunningServer


def conversation(base: str) -> dict[str, object]:
    with SyncClient(base, KEY) as c:
        assert c.health()
        s = c.session("sync")
        first = s.run("x = 6")
        answer = s.run("x * 7")
        events = list(s.stream("print(x)"))
        s.upload("notes.txt", b"hello")
        call = {"type": "function_call", "call_id": "c1", "name": "run_python"}
        [item] = s.handle_tool_calls([{**call, "arguments": json.dumps({"code": "x + 1"})}])
        runs = s.run_code_blocks("```python\nx - 1\n```")
        try:
            s.download("missing.txt")
        except KssError as exc:
            missing = exc.code
        return {
            "first": first.status,
            "answer": answer.result,
            "events": [e.type for e in events],
            "stdout": "".join(e["text"] for e in events if e.type == EventType.STREAM),
            "files": [f.name for f in s.files()],
            "download": s.download("notes.txt"),
            "tool": item["output"],
            "block": runs[0].result.result if runs[0].result else None,
            "missing": missing,
            "notebook_cells": len(s.notebook()["cells"]),
        }


async def test_the_sync_client_does_what_the_async_one_does(kss: RunningServer) -> None:
    seen = await asyncio.to_thread(conversation, kss.base)
    assert seen["first"] == "ok" and seen["answer"] == {"text/plain": "42"}
    assert seen["events"][-1] == EventType.DONE and seen["stdout"] == "6\n"
    assert seen["files"] == ["notes.txt"] and seen["download"] == b"hello"
    assert str(seen["tool"]).endswith("result:\n7")
    assert seen["block"] == {"text/plain": "5"}
    assert seen["missing"] == "file_not_found"
    assert seen["notebook_cells"] == 5


def test_sync_errors_raise_in_the_callers_thread() -> None:
    with SyncClient(dead_url(), KEY) as c, pytest.raises(KssError) as err:
        c.session("x").run("1")
    assert err.value.code == "unreachable"
