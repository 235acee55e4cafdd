"""The session WebSocket against a real server with real kernels."""

import contextlib
from urllib.parse import quote

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClosedError
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from server.websocket import text_frame
from tests.conftest import KEY
from tests.polling import until


async def test_streaming_order_chunks_arrive_before_done(server):
    # The kernel waits for a flag that the test creates only after it has received the first
    # chunk: if stdout were delivered at the end, this would time out instead of passing.
    code = (
        "import os, time\nprint('first', flush=True)\n"
        "while not os.path.exists('.go'): time.sleep(0.01)\nprint('second')"
    )
    ws = await server.api.ws("streamer")
    flag = server.state.registry.work_dir_for("t1", "streamer") / ".go"
    await ws.send({"type": "execute", "id": "e1", "code": code, "timeout": 20})
    events = await ws.until(lambda e: e["type"] == "stream")
    assert events[-1]["text"] == "first\n" and events[-1]["id"] == "e1"
    flag.touch()
    rest = await ws.until(lambda e: e["type"] == "done")
    assert rest[-1]["status"] == "ok"
    assert [e["text"] for e in rest if e["type"] == "stream"] == ["second\n"]
    seqs = [e["seq"] for e in events + rest]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(e["id"] == "e1" for e in events + rest)
    ws.close()


async def test_event_kinds(server):
    ws = await server.api.ws("kinds")
    events = await ws.run("1 + 1", "r1")
    kinds = [e["type"] for e in events]
    assert kinds == ["status", "result", "status", "done"]
    assert [e["state"] for e in events if e["type"] == "status"] == ["busy", "idle"]
    assert events[1]["data"] == {"text/plain": "2"}
    done = events[-1]
    assert done["status"] == "ok" and done["execution_count"] >= 1 and done["duration_ms"] > 0
    events = await ws.run("import matplotlib.pyplot as plt; plt.plot([1]); plt.show()", "img")
    display = next(e for e in events if e["type"] == "display")
    assert display["data"]["image/png"].startswith("iVBOR")
    events = await ws.run("raise KeyError('k')", "bad")
    error = next(e for e in events if e["type"] == "error")
    assert error["ename"] == "KeyError" and events[-1]["status"] == "error"
    ws.close()


async def test_a_socket_may_go_without_status_events(server):
    quiet = await server.api.ws("quiet", query="status=off")
    chatty = await server.api.ws("quiet")
    events = await quiet.run("1 + 1", "q1")
    assert [e["type"] for e in events] == ["result", "done"]
    seen = await chatty.until(lambda e: e["type"] == "done")
    assert [e["type"] for e in seen] == ["status", "result", "status", "done"]
    quiet.close()
    replayed = await server.api.ws("quiet", since=0, query="status=false")
    again = await replayed.until(lambda e: e["type"] == "done")
    assert [e["type"] for e in again] == ["result", "done"]
    replayed.close()
    resp = await server.api.call("GET", "/api/sessions/quiet/ws?status=maybe")
    assert resp.status == 400 and resp.json["error"]["code"] == "invalid_field"


async def test_two_executions_queue_in_order_with_position(server):
    ws = await server.api.ws("queue")
    await ws.send({"type": "execute", "id": "q1", "code": "import time; time.sleep(0.5); 'one'"})
    await ws.send({"type": "execute", "id": "q2", "code": "'two'"})
    events = await ws.until(lambda e: e["type"] == "done" and e["id"] == "q2")
    queued = [e for e in events if e["type"] == "queued"]
    assert queued == [{"type": "queued", "position": 1, "id": "q2", "seq": queued[0]["seq"]}]
    dones = [e["id"] for e in events if e["type"] == "done"]
    assert dones == ["q1", "q2"]
    results = [e["data"]["text/plain"] for e in events if e["type"] == "result"]
    assert results == ["'one'", "'two'"]
    ws.close()


async def test_every_socket_of_a_session_sees_the_same_events(server):
    a = await server.api.ws("watched")
    b = await server.api.ws("watched")

    async def both_subscribed() -> bool:  # the server subscribes a socket after its upgrade
        info = await server.api.call("GET", "/api/sessions/watched")
        return info.json["connections"] == 2

    await until(both_subscribed)
    events_a = await a.run("print('shared')", "s1")
    events_b = await b.until(lambda e: e["type"] == "done" and e["id"] == "s1")
    assert events_a == events_b
    a.close()
    b.close()


async def test_reconnect_with_since_replays_what_was_missed(server):
    ws = await server.api.ws("replay")
    events = await ws.run("print('before')", "p1")
    last_seq = events[-1]["seq"]
    ws.close()
    await server.api.execute("replay", "print('while away')")
    ws = await server.api.ws("replay", since=last_seq)
    missed = await ws.until(lambda e: e["type"] == "done")
    assert missed[0]["seq"] == last_seq + 1
    assert any(e.get("text") == "while away\n" for e in missed)
    ws.close()


async def test_since_older_than_memory_replays_from_the_transcript(tmp_path):
    from tests.conftest import make_settings, running_server

    settings = make_settings(tmp_path, replay_events=5, pool_size=0)
    async with running_server(settings) as srv:
        for i in range(4):
            await srv.api.execute("old", f"print({i})")
        last = srv.state.registry.get("t1", "old").events.last_seq
        assert last > 5  # more than the memory buffer holds
        ws = await srv.api.ws("old", since=0)
        replayed = [await ws.recv() for _ in range(last)]
        assert [e["seq"] for e in replayed] == list(range(1, last + 1))
        assert [e["text"] for e in replayed if e["type"] == "stream"] == [
            "0\n",
            "1\n",
            "2\n",
            "3\n",
        ]
        ws.close()
        # Only what neither memory nor the transcript holds is reported as a gap.
        await srv.state.store.delete_transcript("t1", "old")
        ws = await srv.api.ws("old", since=0)
        gap = await ws.recv()
        assert gap["type"] == "gap" and gap["from_seq"] == 1
        assert (await ws.recv())["seq"] == gap["to_seq"] + 1
        ws.close()


async def test_events_the_shared_replay_budget_dropped_replay_from_the_transcript(tmp_path):
    from tests.conftest import make_settings, running_server

    settings = make_settings(tmp_path, replay_total_bytes=3_000, pool_size=0)
    async with running_server(settings) as srv:
        for i in range(3):
            await srv.api.execute("early", f"print('early {i}')")
        early = srv.state.registry.get("t1", "early").events
        last = early.last_seq
        await srv.api.execute("busy", "for i in range(20): print('x' * 200, flush=True)")
        budget = srv.state.registry.replay_budget
        assert budget.used <= 3_000 and early.oldest_seq > 1  # the older session's went first
        status = (await srv.api.call("GET", "/api/status")).json["replay_memory"]
        assert status == {"bytes": budget.used, "limit_bytes": 3_000}
        ws = await srv.api.ws("early", since=0)
        replayed = [await ws.recv() for _ in range(last)]
        assert [e["seq"] for e in replayed] == list(range(1, last + 1))
        texts = [e["text"] for e in replayed if e["type"] == "stream"]
        assert texts == ["early 0\n", "early 1\n", "early 2\n"]
        ws.close()


async def test_interrupt_and_restart_frames(server):
    ws = await server.api.ws("ctlws")
    await ws.run("keep = 1", "k")
    await ws.send({"type": "execute", "id": "long", "code": "import time; time.sleep(30)"})
    await ws.until(lambda e: e["type"] == "status" and e["state"] == "busy")
    await ws.send({"type": "interrupt"})
    events = await ws.until(lambda e: e["type"] == "done")
    assert events[-1]["status"] == "error"
    assert any(e["type"] == "error" and e["ename"] == "KeyboardInterrupt" for e in events)
    await ws.send({"type": "restart"})
    await ws.until(lambda e: e["type"] == "status" and e["state"] == "idle")
    events = await ws.run("'keep' in dir()", "after")
    assert next(e for e in events if e["type"] == "result")["data"]["text/plain"] == "False"
    assert events[-1]["kernel_restarted"] is True
    ws.close()


async def test_restart_during_an_execution_aborts_it(server):
    ws = await server.api.ws("abort")
    await ws.send({"type": "execute", "id": "doomed", "code": "import time; time.sleep(30)"})
    await ws.until(lambda e: e["type"] == "status" and e["state"] == "busy")
    await ws.send({"type": "restart"})
    events = await ws.until(lambda e: e["type"] == "done")
    assert events[-1]["id"] == "doomed" and events[-1]["status"] == "aborted"
    events = await ws.run("2 * 21", "fresh")
    assert events[-1]["status"] == "ok"
    ws.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "invalid_json"),
        ("[]", "invalid_json"),
        ('{"id": "x1"}', "missing_field"),
        ('{"type": "fly", "id": "x2"}', "unknown_type"),
        ('{"type": "execute", "id": "x3"}', "missing_field"),
        ('{"type": "execute", "id": "x4", "code": 42}', "invalid_field"),
        ('{"type": "execute", "id": "x5", "code": "1", "timeout": "never"}', "invalid_field"),
        (
            '{"type": "execute", "id": "x6", "code": "1", "timeout": 1' + "0" * 400 + "}",
            "invalid_field",
        ),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),  # nested past the recursion limit
        (b"\x00\x01binary", "invalid_frame"),
    ],
)
async def test_bad_frames_are_rejected_and_the_socket_lives_on(server, frame, code):
    ws = await server.api.ws("frames")
    await ws.send(frame)
    event = await ws.recv()
    assert event["type"] == "rejected" and event["error"]["code"] == code
    assert event["error"]["message"]
    if '"id": "x' in str(frame):
        assert event["id"].startswith("x")
    events = await ws.run("'alive'", "ok")
    assert events[-1]["status"] == "ok"
    ws.close()


async def test_oversize_frames(server):
    ws = await server.api.ws("bigframe")
    limit = server.settings.max_code_bytes
    await ws.send({"type": "execute", "id": "big", "code": "#" * (limit + 1)})
    event = await ws.recv()
    assert event["type"] == "rejected" and event["error"]["code"] == "payload_too_large"
    # Far over the hard frame limit the server closes with 1009 (message too big).
    with contextlib.suppress(WebSocketClosedError):  # closed while we were still writing
        await ws.send("x" * (server.settings.max_request_bytes * 2 + 100))
    assert await ws.conn.read_message() is None
    # The 1009 close frame can lose the race with the TCP close while we still write.
    assert ws.conn.close_code in (1009, None)
    other = await server.api.ws("bigframe")
    assert (await other.run("'fine'", "f"))[-1]["status"] == "ok"
    other.close()


async def test_upgrade_errors_are_json(server):
    for key in ["wrong-key", None]:
        with pytest.raises(HTTPClientError) as err:
            await server.api.ws("nobody", key=key)
        assert err.value.code == 401
    with pytest.raises(HTTPClientError) as err:
        await server.api.ws("bad user")
    assert err.value.code == 400
    with pytest.raises(HTTPClientError) as err:
        await _ws_raw(server)
    assert err.value.code == 400
    assert server.state.registry.find("t1", "nobody") is None


async def _ws_raw(server):
    from tornado.websocket import websocket_connect

    url = server.base.replace("http", "ws") + "/api/sessions/fine/ws?since=-3&token=" + KEY
    return await websocket_connect(url)


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a plain GET
        {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"},
        {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "8",
        },
    ],
    ids=["plain-get", "no-key", "version-8"],
)
async def test_a_request_that_is_no_handshake_is_a_json_426_before_the_session(server, headers):
    resp = await server.api.call("GET", "/api/sessions/no-upgrade/ws", headers=headers)
    assert resp.status == 426 and resp.json["error"]["code"] == "upgrade_required"
    assert resp.headers["Upgrade"] == "websocket"
    assert resp.headers["Sec-WebSocket-Version"] == "13"
    assert server.state.registry.find("t1", "no-upgrade") is None
    resp = await server.api.call("GET", "/api/sessions/no-upgrade/ws", key="wrong-key")
    assert resp.status == 401  # the credential first, as on every route


@pytest.mark.parametrize("since", ["\u00b2", "\u0661", "-3", "1e3", "9" * 19])
async def test_since_takes_only_ascii_digits(server, since):
    path = f"/api/sessions/since-user/ws?since={quote(since)}"
    resp = await server.api.call("GET", path)  # refused before the upgrade is looked at
    assert resp.status == 400 and resp.json["error"]["code"] == "invalid_since"
    assert server.state.registry.find("t1", "since-user") is None


async def test_token_in_query_string(server):
    from tornado.websocket import websocket_connect

    url = server.base.replace("http", "ws") + "/api/sessions/qtoken/ws?token=" + KEY
    conn = await websocket_connect(url)
    assert conn.protocol is not None
    conn.close()


async def test_a_broken_client_does_not_affect_other_sessions(server):
    bad = await server.api.ws("breaker")
    await bad.send({"type": "execute", "id": "b", "code": "print('x' * 100000)"})
    bad.conn.stream.close()  # vanish mid-execution without a close handshake
    with pytest.raises(WebSocketClosedError):
        await bad.send({"type": "interrupt"})
    good = await server.api.ws("bystander")
    assert (await good.run("'ok'", "g"))[-1]["status"] == "ok"
    r = await server.api.execute("breaker", "'breaker still works'")
    assert r["status"] == "ok"
    good.close()


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 70_001])
def test_events_written_together_are_frames_a_client_library_reads(size: int) -> None:
    """Events published together (an execution's idle status and `done`) go out in one
    write of frames the server builds itself (server/websocket.py: text_frame); each
    length encoding (7-bit, 16-bit, 64-bit) read back by the `websockets` library."""
    text = "é" * (size // 2) + "x" * (size % 2)
    data = text.encode()
    reader = StreamReader()
    reader.feed_data(text_frame(data) + text_frame(b"{}"))
    reader.feed_eof()
    frames = []
    for _ in range(2):
        parse = Frame.parse(reader.read_exact, mask=False)
        with pytest.raises(StopIteration) as parsed:
            next(parse)
        frames.append(parsed.value.value)
    assert [(f.opcode, f.fin) for f in frames] == [(Opcode.TEXT, True)] * 2
    assert frames[0].data.decode() == text and frames[1].data == b"{}"
