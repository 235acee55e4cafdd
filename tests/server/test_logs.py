"""What reaches the log: no key through a real server, redaction, floods cut to one line."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

from kernels import log_context
from server.logs import (
    JsonFormatter,
    RateLimiter,
    Redactor,
    configure_logging,
    install_filters,
)
from tests.conftest import KEY, KEY2, RunningServer, make_settings, running_server
from tests.polling import until

BAD_KEYS = ["wrong-key-aaaaaaaa", "wrong-key-bbbbbbbb"]


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    async with running_server(make_settings(tmp_path_factory.mktemp("logs"))) as server:
        yield server


async def test_no_key_reaches_the_log(srv: RunningServer, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    out = io.StringIO()
    filtered = install_filters(logging.StreamHandler(out), srv.settings)
    logging.getLogger().addHandler(filtered)
    try:
        # A browser cannot set headers on a WebSocket: the key goes in the query.
        url = srv.base.replace("http", "ws", 1) + f"/api/sessions/logs/ws?token={KEY}&since=0"
        (await websocket_connect(url)).close()
        for bad in BAD_KEYS:
            with pytest.raises(HTTPClientError):
                await websocket_connect(url.replace(KEY, bad))
        assert (await srv.api.call("GET", f"/api/status?token={KEY2}")).status == 200
        resp = await srv.api.call("GET", "/api/status", key=BAD_KEYS[0])
        assert resp.status == 401
        resp = await srv.api.call("GET", f"/api/nowhere?sig={KEY}", key=None)
        assert resp.status == 404
    finally:
        logging.getLogger().removeHandler(filtered)
    lines = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any(line.startswith("101 GET /api/sessions/{user}/ws ") for line in lines), lines
    for secret in [KEY, KEY2, *BAD_KEYS]:
        assert not [line for line in lines if secret in line]
        assert secret not in out.getvalue()


def record(msg: str, *args: object, name: str = "server.x", level: int = logging.WARNING):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_redaction_masks_keys_tokens_and_bearers() -> None:
    redactor = Redactor(["sekrit-key-123"])
    r = record("GET %s with %s", "/ws?token=abc.def&since=3&sig=XYZ", "Bearer qwerty")
    assert redactor.filter(r)
    assert (
        r.getMessage() == "GET /ws?token=[redacted]&since=3&sig=[redacted] with Bearer [redacted]"
    )
    try:
        raise ValueError("bad key sekrit-key-123 in access_token=zzz")
    except ValueError:
        r = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    redactor.filter(r)
    text = logging.Formatter().format(r)
    assert "sekrit-key-123" not in text and "zzz" not in text and "[redacted]" in text


def test_a_flood_is_cut_to_a_few_lines_and_one_count() -> None:
    now = [0.0]
    emitted: list[logging.LogRecord] = []
    limiter = RateLimiter(emitted.append, burst=3, interval=10, clock=lambda: now[0])
    passed = [limiter.filter(record("too many open files: %s", i)) for i in range(50)]
    assert passed == [True] * 3 + [False] * 47
    assert limiter.filter(record("another kind %s", 1))  # its own allowance
    info = [limiter.filter(record("kernel started for %s", u, level=logging.INFO)) for u in "ab"]
    assert info == [True, True]  # lifecycle lines are not limited
    noisy = record("Malformed HTTP message from %s", "x", name="tornado.general", level=20)
    assert [limiter.filter(noisy) for _ in range(5)] == [True] * 3 + [False] * 2
    access = record("%d %s", 408, "/x", name="tornado.access")
    assert all(limiter.filter(access) for _ in range(20))
    now[0] = 11.0
    assert limiter.filter(record("too many open files: %s", 99))
    summaries = sorted(r.getMessage() for r in emitted)
    assert summaries == [
        "2 more like this in 10 s were not logged: Malformed HTTP message from %s",
        "47 more like this in 10 s were not logged: too many open files: %s",
    ]
    assert all(r.levelno == logging.WARNING or r.name == "tornado.general" for r in emitted)


async def test_tornados_per_connection_noise_is_rate_limited(
    srv: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    out = io.StringIO()
    handler = install_filters(logging.StreamHandler(out), srv.settings)
    logging.getLogger().addHandler(handler)
    try:
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.settings.port)
            writer.write(b"NONSENSE\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 400")
            writer.close()
    finally:
        logging.getLogger().removeHandler(handler)
    raw = [r for r in caplog.records if r.getMessage().startswith("Malformed HTTP message")]
    assert len(raw) == 20  # tornado logs each one...
    assert out.getvalue().count("Malformed HTTP message") == 5  # ...five reach the log


async def test_no_token_or_link_signature_reaches_the_log(
    srv: RunningServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    out = io.StringIO()
    filtered = install_filters(logging.StreamHandler(out), srv.settings)
    logging.getLogger().addHandler(filtered)
    try:
        minted = await srv.api.call("POST", "/api/sessions/logs2/token")
        token = minted.json["token"]
        prefix, claims, mac = token.split(".")
        tampered = f"{prefix}.{claims}.{mac[::-1]}"
        base = srv.base.replace("http", "ws", 1) + "/api/sessions"
        (await websocket_connect(f"{base}/logs2/ws?token={token}")).close()
        for refused in [f"{base}/logs2/ws?token={tampered}", f"{base}/other/ws?token={token}"]:
            with pytest.raises(HTTPClientError):
                await websocket_connect(refused)
        assert (await srv.api.call("GET", "/api/sessions/other", key=token)).status == 401
        upload = "/api/sessions/logs2/files/x.txt?links=signed"
        url = (await srv.api.call("PUT", upload, raw=b"x")).json["url"]
        sig = url.partition("&sig=")[2]
        assert (await srv.api.call("GET", url, key=None)).status == 200
        exp = int(url.split("exp=")[1].split("&")[0])
        edited = url.replace(f"exp={exp}", f"exp={exp + 60}")
        assert (await srv.api.call("GET", edited, key=None)).status == 403
    finally:
        logging.getLogger().removeHandler(filtered)
    lines = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any("401 GET /api/sessions/{user} " in line for line in lines), lines
    assert any("403 GET /api/sessions/{user}/files/{name} " in line for line in lines), lines
    for secret in [token, mac, mac[::-1], sig]:
        assert not [line for line in lines if secret in line]
        assert secret not in out.getvalue()


async def test_json_lines_name_the_tenant_user_kernel_and_execution(
    srv: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(log_context.ContextFilter())
    logging.getLogger().addHandler(install_filters(handler, srv.settings))
    try:
        # A process the execution leaves running is stopped after it (once its answer is
        # out, before the session runs anything else), with a line saying so.
        code = "import subprocess; subprocess.Popen(['sleep', '60'])"
        answer = await srv.api.execute("logs-json", code, id="exec-json-1")
        assert answer["status"] == "ok"
        await until(lambda: "left running" in out.getvalue())
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    [access] = [line for line in lines if line.get("route") == "/api/sessions/{user}/execute"]
    assert access["tenant"] == "t1" and access["user"] == "logs-json"
    assert access["method"] == "POST" and access["status"] == 200
    assert isinstance(access["duration_ms"], float) and access["logger"] == "tornado.access"
    [stray] = [line for line in lines if "left running" in line["message"]]
    assert stray["tenant"] == "t1" and stray["user"] == "logs-json"
    assert stray["execution"] == "exec-json-1"
    assert stray["kernel"] == srv.state.registry.get("t1", "logs-json").last_kernel_id
    assert datetime.datetime.fromisoformat(stray["time"]).tzinfo is not None


def test_configure_logging_writes_the_format_asked_for(tmp_path) -> None:
    root = logging.getLogger()
    for fmt in ("json", "text"):
        out = io.StringIO()
        settings = make_settings(tmp_path, log_format=fmt, pool_size=0)
        handler = configure_logging(settings, out)
        try:
            with log_context.bound(tenant="acme", user="alice"):
                logging.getLogger("server.test").warning("hello %s", "there")
            logging.getLogger("server.test").warning("nobody's")
        finally:
            root.removeHandler(handler)
        first, second = out.getvalue().splitlines()
        if fmt == "json":
            line = json.loads(first)
            assert line["message"] == "hello there" and line["level"] == "WARNING"
            assert (line["tenant"], line["user"], line["logger"]) == (
                "acme",
                "alice",
                "server.test",
            )
            assert "tenant" not in json.loads(second)
        else:
            assert first.endswith("WARNING server.test: hello there [tenant=acme user=alice]")
            assert second.endswith("server.test: nobody's")


def test_the_default_format_is_text_on_a_terminal_else_json(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert make_settings(tmp_path).log_format == "text"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert make_settings(tmp_path).log_format == "json"
