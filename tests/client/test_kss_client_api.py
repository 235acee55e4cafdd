"""The async client against a real server: every call, streaming with a cut connection,
and typed errors (wrong key, 404, a server that is down or silent)."""

from __future__ import annotations

import asyncio

import pytest
from client_faults import CuttableProxy, SilentServer, dead_url
from kss_client import Client, EventType, ExecutionStatus, KssError, Session, explain

from tests.conftest import KEY, RunningServer
from tests.polling import until


async def is_busy(session: Session) -> bool:
    return (await session.info()).state == "busy"


async def test_run_returns_every_field_of_the_answer(client: Client) -> None:
    s = client.session("run-fields")
    first = await s.run("x = 21\nprint('hello')")
    result = await s.run("import sys\nprint('warn', file=sys.stderr)\nx * 2")
    assert first.status is ExecutionStatus.OK and first.ok
    assert first.stdout == "hello\n"
    assert result.result == {"text/plain": "42"}
    assert result.stderr == "warn\n"
    assert result.execution_count == (first.execution_count or 0) + 1
    assert result.error is None and not result.truncated and not result.kernel_restarted
    assert result.duration_ms > 0 and result.id
    assert [o["output_type"] for o in result.outputs] == ["stream", "execute_result"]


async def test_execution_errors_are_results_not_exceptions(client: Client) -> None:
    result = await client.session("run-error").run("1 / 0")
    assert result.status is ExecutionStatus.ERROR
    assert result.error is not None and result.error.ename == "ZeroDivisionError"
    assert result.error.traceback


async def test_a_timeout_is_a_result(client: Client) -> None:
    result = await client.session("run-timeout").run("import time; time.sleep(20)", timeout=1)
    assert result.status is ExecutionStatus.TIMEOUT


async def test_files_written_come_back_with_absolute_urls(
    kss: RunningServer, client: Client
) -> None:
    s = client.session("run-files")
    result = await s.run("open('out.txt', 'w').write('hi')")
    [change] = result.files
    assert change.name == "out.txt" and change.size == 2 and change.event == "created"
    assert change.url == f"{kss.base}/api/sessions/run-files/files/out.txt"
    assert await s.download("out.txt") == b"hi"


async def test_stream_yields_events_up_to_done(client: Client) -> None:
    events = [e async for e in client.session("stream").stream("print('a')\n6 * 7")]
    kinds = [e.type for e in events]
    assert kinds[-1] == EventType.DONE and events[-1]["status"] == "ok"
    assert EventType.STREAM in kinds and EventType.RESULT in kinds
    seqs = [e.seq for e in events if e.seq is not None]
    assert seqs == sorted(set(seqs))
    assert len({e.exec_id for e in events}) == 1


async def test_stream_resumes_after_a_cut_with_no_loss_and_no_duplicates(
    kss: RunningServer,
) -> None:
    code = "import time\nfor i in range(40):\n    print(i, flush=True)\n    time.sleep(0.03)\n"
    port = int(kss.base.rsplit(":", 1)[1])
    async with CuttableProxy(port) as proxy, Client(proxy.url, KEY) as c:
        events = []
        async for event in c.session("stream-cut").stream(code):
            events.append(event)
            if sum(e.type == EventType.STREAM for e in events) == 5:
                proxy.cut()  # mid-execution: the next read fails and the stream reconnects
        assert proxy.connections >= 2, "the client reconnected"
    seqs = [e.seq for e in events]
    assert None not in seqs and len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
    text = "".join(e["text"] for e in events if e.type == EventType.STREAM)
    assert text == "".join(f"{i}\n" for i in range(40))
    assert events[-1].type == EventType.DONE and events[-1]["status"] == "ok"


async def test_stream_can_be_closed_early(client: Client) -> None:
    stream = client.session("stream-early").stream("for i in range(3): print(i)")
    first = await anext(stream)
    assert first.exec_id
    await stream.aclose()  # type: ignore[attr-defined]


async def test_files_upload_download_listing(client: Client, tmp_path) -> None:
    s = client.session("files")
    info = await s.upload("data/sales.csv", b"region,amount\nnorth,3\nsouth,4\n")
    assert info.name == "data/sales.csv" and info.size == 30
    local = tmp_path / "big.bin"
    local.write_bytes(bytes(range(256)) * 8192)  # 2 MB, streamed from the path
    await s.upload("big.bin", local)
    assert await s.download("big.bin") == local.read_bytes()
    listed = {f.name: f for f in await s.files()}
    assert set(listed) == {"data/sales.csv", "big.bin"}
    assert listed["big.bin"].origin == "upload" and listed["big.bin"].size == 2 * 1024 * 1024
    assert listed["data/sales.csv"].url == s.file_url("data/sales.csv")
    result = await s.run("import pandas as pd\nint(pd.read_csv('data/sales.csv').amount.sum())")
    assert result.result == {"text/plain": "7"}
    await s.delete_file("big.bin")
    assert [f.name for f in await s.files()] == ["data/sales.csv"]


async def test_notebook_and_notes(client: Client) -> None:
    s = client.session("notebook")
    await s.run("a = 1")
    seq = await s.note("## Checked the data")
    assert seq > 0
    await s.run("a + 1")
    nb = await s.notebook()
    assert nb["nbformat"] == 4
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert kinds == ["code", "markdown", "code"]
    assert "Checked the data" in "".join(nb["cells"][1]["source"])


async def test_interrupt_stops_a_running_execution(client: Client) -> None:
    s = client.session("interrupt")
    await s.ensure()
    assert await s.interrupt() is False  # nothing runs
    run = asyncio.create_task(s.run("import time\nwhile True: time.sleep(0.05)"))
    await until(lambda: is_busy(s))
    assert await s.interrupt() is True
    result = await run
    assert result.status is ExecutionStatus.ERROR
    assert result.error is not None and result.error.ename == "KeyboardInterrupt"


async def test_restart_clears_state_and_is_reported(client: Client) -> None:
    s = client.session("restart")
    await s.run("kept = 1")
    info = await s.restart()
    assert info.restart_ms is not None and info.state in ("idle", "starting")
    result = await s.run("'kept' in dir()")
    assert result.kernel_restarted and result.result == {"text/plain": "False"}


async def test_a_dead_kernel_is_a_result_and_the_next_run_says_so(client: Client) -> None:
    s = client.session("dies")
    await s.run("y = 2")
    died = await s.run("import os; os._exit(1)")
    assert died.status is ExecutionStatus.ERROR
    assert died.error is not None and died.error.ename == "KernelDied"
    after = await s.run("1")
    assert after.kernel_restarted


async def test_close_and_purge(client: Client) -> None:
    s = client.session("closing")
    await s.run("1")
    await s.close()
    assert (await s.info()).state == "closed"
    await s.close(purge=True)
    with pytest.raises(KssError) as err:
        await s.info()
    assert err.value.status == 404 and err.value.code == "session_not_found"


async def test_health_and_sessions(client: Client) -> None:
    assert await client.health()
    await client.session("listed").ensure()
    assert "listed" in {s.user for s in await client.sessions()}


async def test_http_errors_raise_one_type_with_the_servers_code(kss: RunningServer) -> None:
    async with Client(kss.base, "wrong-key-123") as bad:
        with pytest.raises(KssError) as err:
            await bad.session("x").run("1")
    assert (err.value.status, err.value.code) == (401, "unauthorized")
    assert "API key" in explain(err.value)
    async with Client(kss.base, KEY) as c:
        with pytest.raises(KssError) as err:
            await c.session("nofile").download("missing.csv")
        assert (err.value.status, err.value.code) == (404, "file_not_found")
        with pytest.raises(KssError) as err:
            await c.session("bad/user").run("1")
        assert err.value.status in (400, 404)
        with pytest.raises(KssError) as err:
            await c.session("ws-refused").stream("1", timeout=10_000).__anext__()
        assert err.value.code == "invalid_field"


async def test_wrong_key_on_the_websocket(kss: RunningServer) -> None:
    async with Client(kss.base, "wrong-key-123") as bad:
        with pytest.raises(KssError) as err:
            await anext(bad.session("x").stream("1"))
    assert (err.value.status, err.value.code) == (401, "unauthorized")


async def test_a_server_that_is_down() -> None:
    async with Client(dead_url(), KEY) as c:
        with pytest.raises(KssError) as err:
            await c.session("x").run("1")
        assert err.value.code == "unreachable" and err.value.status is None
        assert "cannot be reached" in explain(err.value)
        with pytest.raises(KssError) as err:
            await anext(c.session("x").stream("1"))
        assert err.value.code == "unreachable"


async def test_a_server_that_never_answers() -> None:
    async with SilentServer() as silent, Client(silent.url, KEY, timeout=0.3) as c:
        with pytest.raises(KssError) as err:
            await c.health()
    assert err.value.code == "no_answer"
    assert "did not answer in time" in explain(err.value)
