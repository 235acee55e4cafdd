"""Which pages may talk to the server: origins parsed, CORS preflights and headers, and the
WebSocket's origin check, through a real server with one allowed origin."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from server.config import load_settings
from server.origins import Origins, normalize_origin, parse_origins
from tests.conftest import KEY, RunningServer, make_settings, running_server

ALLOWED = "https://chat.example.com"
FOREIGN = "https://evil.example.net"


def test_origins_are_normalized_as_browsers_send_them():
    assert normalize_origin("HTTPS://Chat.Example.com:443/") == "https://chat.example.com"
    assert normalize_origin("http://localhost:3000") == "http://localhost:3000"
    assert normalize_origin("http://[::1]:8080") == "http://[::1]:8080"
    assert parse_origins(" https://a.example , http://b.example:81,") == {
        "https://a.example",
        "http://b.example:81",
    }
    for bad in ["*", "null", "ftp://x.example", "https://x.example/path", "x.example", "https://"]:
        with pytest.raises(ValueError):
            normalize_origin(bad)
    with pytest.raises(ValueError, match="allowed_origins"):
        load_settings(["--allowed-origins", "https://ok.example,*"], environ={})


def test_own_and_configured_origins_are_accepted_others_not():
    origins = Origins(parse_origins(ALLOWED))
    assert origins.accepts("http://127.0.0.1:8765", "127.0.0.1:8765")  # the server's own
    assert origins.accepts("https://127.0.0.1:8765", "127.0.0.1:8765")  # TLS at a proxy
    assert origins.accepts(ALLOWED, "127.0.0.1:8765")
    assert origins.is_foreign_allowed("https://CHAT.example.com")
    for other in [FOREIGN, "null", "http://127.0.0.1:9999", "https://chat.example.com:8443", ""]:
        assert not origins.accepts(other, "127.0.0.1:8765"), other
    assert not Origins().is_foreign_allowed(ALLOWED)


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    settings = make_settings(tmp_path_factory.mktemp("origins"), allowed_origins=ALLOWED)
    async with running_server(settings) as server:
        yield server


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_a_preflight_from_an_allowed_origin_needs_no_key(srv: RunningServer):
    for path in ["/api/sessions/pat/execute", "/api/sessions", "/api/sessions/pat/files/a.csv"]:
        resp = await srv.api.call("OPTIONS", path, key=None, headers=preflight(ALLOWED))
        assert resp.status == 204, (path, resp.body)
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert "Origin" in resp.headers["Vary"]


async def test_a_preflight_from_another_origin_gets_no_cors_headers(srv: RunningServer):
    resp = await srv.api.call(
        "OPTIONS", "/api/sessions/pat/execute", key=None, headers=preflight(FOREIGN)
    )
    assert resp.status == 403 and resp.json["error"]["code"] == "origin_not_allowed"
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


async def test_the_actual_request_still_needs_a_key(srv: RunningServer):
    resp = await srv.api.call("GET", "/api/sessions", key=None, headers={"Origin": ALLOWED})
    assert resp.status == 401 and resp.json["error"]["code"] == "unauthorized"
    # A page may read the refusal: the error carries the CORS headers too.
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    resp = await srv.api.call("GET", "/api/sessions", headers={"Origin": ALLOWED})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Content-Disposition" in resp.headers["Access-Control-Expose-Headers"]
    resp = await srv.api.call("GET", "/api/sessions", headers={"Origin": FOREIGN})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers


def ws_url(srv: RunningServer, user: str) -> str:
    return srv.base.replace("http", "ws", 1) + f"/api/sessions/{user}/ws"


async def test_the_websocket_takes_its_own_and_allowed_origins(srv: RunningServer):
    own = f"http://127.0.0.1:{srv.settings.port}"
    for origin in [own, ALLOWED, None]:  # None: not a browser
        headers = {"Authorization": f"Bearer {KEY}", **({"Origin": origin} if origin else {})}
        conn = await websocket_connect(HTTPRequest(ws_url(srv, "ori"), headers=headers))
        conn.close()


async def test_the_websocket_refuses_other_origins_before_anything_happens(srv: RunningServer):
    headers = {"Authorization": f"Bearer {KEY}", "Origin": FOREIGN}
    with pytest.raises(HTTPClientError) as caught:
        await websocket_connect(HTTPRequest(ws_url(srv, "refused"), headers=headers))
    assert caught.value.code == 403
    assert caught.value.response is not None
    body = json.loads(caught.value.response.body)
    assert body["error"]["code"] == "origin_not_allowed"
    assert FOREIGN in body["error"]["message"]
    # Refused at the upgrade: no session was made for it.
    assert srv.state.registry.find("t1", "refused") is None
