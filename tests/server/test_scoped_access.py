"""Scoped tokens and signed links through a real server: what each opens, what it does not,
how a refusal reads, and what survives a restart or the removal of a key."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

from server.app import make_routes
from tests.client import Api
from tests.conftest import KEY, KEY2, RunningServer, make_settings, running_server


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    async with running_server(make_settings(tmp_path_factory.mktemp("scoped"))) as server:
        yield server


async def mint(srv: RunningServer, user: str, key: str = KEY, **body: object) -> dict:
    resp = await srv.api.call("POST", f"/api/sessions/{user}/token", body or None, key=key)
    assert resp.status == 201, resp.body
    return resp.json


def as_wrong_key(resp) -> bool:
    """The answer a wrong key gets, word for word."""
    return (
        resp.status == 401
        and resp.json["error"]
        == {"code": "unauthorized", "message": "a valid API key or token is required"}
        and resp.headers.get("WWW-Authenticate") == 'Bearer realm="kss"'
    )


async def test_a_token_opens_its_users_session_over_rest_and_websocket(srv: RunningServer):
    minted = await mint(srv, "alice", ttl=120)
    assert set(minted) == {"token", "user", "expires_at"} and minted["user"] == "alice"
    expires = time.mktime(time.strptime(minted["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 0 < expires - time.mktime(time.gmtime()) <= 121
    alice = Api(srv.base, minted["token"])
    assert (await alice.call("PUT", "/api/sessions/alice")).status in (200, 201)
    result = await alice.execute("alice", "open('out.txt', 'w').write('hi'); 6 * 7")
    assert result["result"] == {"text/plain": "42"}
    assert (await alice.call("PUT", "/api/sessions/alice/files/in.txt", raw=b"data")).status == 201
    listing = (await alice.call("GET", "/api/sessions/alice/files")).json["files"]
    assert {f["name"] for f in listing} == {"in.txt", "out.txt"}
    assert (await alice.call("GET", "/api/sessions/alice/files/out.txt")).body == b"hi"
    assert (await alice.call("POST", "/api/sessions/alice/notes", {"markdown": "n"})).status == 201
    assert (await alice.call("GET", "/api/sessions/alice/notebook")).status == 200
    assert (await alice.call("GET", "/api/sessions/alice/notebook/link")).status == 200
    assert (await alice.call("POST", "/api/sessions/alice/interrupt")).status == 200
    # Past the credential check to the body's (installing is not what is tested here).
    resp = await alice.call("POST", "/api/sessions/alice/packages", {"packages": []})
    assert resp.status == 400 and resp.json["error"]["code"] == "invalid_field", resp.body
    ws = await alice.ws("alice", since=0)
    events = await ws.run("print('over the socket')", "w1")
    assert any(e.get("text") == "over the socket\n" for e in events)
    ws.close()
    # The browser's way: the token in the query.
    url = srv.base.replace("http", "ws", 1) + f"/api/sessions/alice/ws?token={minted['token']}"
    (await websocket_connect(url)).close()
    assert (await alice.call("DELETE", "/api/sessions/alice/files/in.txt")).status == 200


async def test_a_token_reaches_nothing_else_and_is_refused_as_a_wrong_key(srv: RunningServer):
    bob = Api(srv.base, (await mint(srv, "bob"))["token"])
    tenant_wide = ["/api/status", "/api/sessions"]
    for path in tenant_wide:
        assert as_wrong_key(await bob.call("GET", path)), path
    # Every route of a user's session, for another user, in every method it has.
    checked = 0
    for pattern, handler, _ in make_routes(None):  # type: ignore[arg-type]
        if "([^/]+)" not in pattern:
            continue
        path = pattern.replace("([^/]+)", "alice").replace("(.+)", "x.txt")
        methods = [m for m in ("GET", "PUT", "POST", "DELETE") if m.lower() in vars(handler)]
        if path.endswith("/ws"):
            with pytest.raises(HTTPClientError) as caught:
                await bob.ws("alice")
            assert caught.value.code == 401
            checked += 1
            continue
        for method in methods or ["GET"]:
            resp = await bob.call(method, path, {} if method in ("POST", "PUT") else None)
            assert as_wrong_key(resp), (method, path, resp.body)
            checked += 1
    assert checked >= 15
    # A token cannot mint a token, not even for its own user.
    assert as_wrong_key(await bob.call("POST", "/api/sessions/bob/token"))
    # Another tenant's key cannot mint for this tenant's users either: it mints for its own.
    other = await mint(srv, "alice", key=KEY2)
    assert as_wrong_key(await Api(srv.base, other["token"]).call("GET", "/api/sessions/bob"))


async def test_bad_tokens_get_a_clear_401(srv: RunningServer):
    token = (await mint(srv, "carol", ttl=60))["token"]
    prefix, body, mac = token.split(".")
    tampered = f"{prefix}.{body}.{mac[::-1]}"
    resp = await Api(srv.base, tampered).call("GET", "/api/sessions/carol")
    assert resp.status == 401 and "signature" in resp.json["error"]["message"]
    auth = srv.state.auth
    clock = auth.clock
    auth.clock = lambda: time.time() + 61
    try:
        resp = await Api(srv.base, token).call("GET", "/api/sessions/carol")
    finally:
        auth.clock = clock
    assert resp.status == 401 and resp.json["error"]["code"] == "token_expired"
    for bad_ttl in [0, -1, 10**9, "60", True]:
        resp = await srv.api.call("POST", "/api/sessions/carol/token", {"ttl": bad_ttl})
        assert resp.status == 400 and resp.json["error"]["code"] == "invalid_field", bad_ttl


async def test_signed_links_open_one_file_without_a_key(srv: RunningServer):
    code = "open('chart.png', 'wb').write(b'png!'); open('other.txt', 'w').write('secret')"
    result = (
        await srv.api.call(
            "POST", "/api/sessions/dana/execute?links=signed&ttl=300", {"code": code}
        )
    ).json
    urls = {f["name"]: f["url"] for f in result["files"]}
    url = urls["chart.png"]
    assert re.fullmatch(r"/api/sessions/dana/files/chart\.png\?exp=\d+&sig=[\w-]+", url), url
    anon = Api(srv.base, None)
    resp = await anon.call("GET", url)
    assert resp.status == 200 and resp.body == b"png!"
    path, _, query = url.partition("?")
    exp = int(query.split("&")[0][4:])
    sig = query.partition("&sig=")[2]
    for edited in [
        f"{path}?exp={exp + 1}&sig={sig}",  # exp edited
        url.replace("chart.png", "other.txt"),  # another file
        f"/api/sessions/erin/files/chart.png?{query}",  # another user
        f"{path}?exp={exp}&sig={sig[:-1]}",
    ]:
        resp = await anon.call("GET", edited)
        assert resp.status == 403 and resp.json["error"]["code"] == "invalid_link", edited
    # A link only reads.
    assert (await anon.call("DELETE", url)).status == 401
    assert (await anon.call("PUT", url, raw=b"overwritten")).status == 401
    # Listings and upload answers sign on request; the notebook has a link route.
    listing = (await srv.api.call("GET", "/api/sessions/dana/files?links=signed")).json["files"]
    assert all("&sig=" in f["url"] for f in listing)
    put = await srv.api.call("PUT", "/api/sessions/dana/files/up.txt?links=signed", raw=b"u")
    assert (await anon.call("GET", put.json["url"])).body == b"u"
    plain = (await srv.api.call("GET", "/api/sessions/dana/files")).json["files"]
    assert all("?" not in f["url"] for f in plain)
    note = (await srv.api.call("GET", "/api/sessions/dana/notebook/link?ttl=60")).json
    assert set(note) == {"url", "expires_at"}
    resp = await anon.call("GET", note["url"])
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ipynb+json"
    # An expired link says so.
    auth = srv.state.auth
    clock = auth.clock
    auth.clock = lambda: time.time() + 301
    try:
        resp = await anon.call("GET", url)
    finally:
        auth.clock = clock
    assert resp.status == 403 and resp.json["error"]["code"] == "link_expired"
    for bad in ["?links=yes", "?links=signed&ttl=0", "?links=signed&ttl=abc"]:
        resp = await srv.api.call("GET", f"/api/sessions/dana/files{bad}")
        assert resp.status == 400, bad


async def test_a_link_to_a_name_that_needs_encoding(srv: RunningServer):
    name = "dir/a b&c=é.txt"
    resp = await srv.api.call(
        "PUT", f"/api/sessions/fay/files/{quote(name)}?links=signed", raw=b"odd"
    )
    assert resp.status == 201, resp.body
    assert (await Api(srv.base, None).call("GET", resp.json["url"])).body == b"odd"


async def test_tokens_survive_a_restart_and_die_with_their_key(tmp_path: Path):
    settings = make_settings(tmp_path, pool_size=0)
    async with running_server(settings) as server:
        token = (await mint(server, "gus"))["token"]
        url = (await server.api.call("GET", "/api/sessions/gus/notebook/link")).json["url"]
    async with running_server(make_settings(tmp_path, pool_size=0)) as server:
        resp = await Api(server.base, token).call("GET", "/api/sessions/gus")
        assert resp.status == 404 and resp.json["error"]["code"] == "session_not_found"
        assert (await Api(server.base, None).call("GET", url)).status == 404  # link holds
    replaced = make_settings(tmp_path, pool_size=0, api_keys=(("t1", "a-new-key-for-t1"),))
    async with running_server(replaced) as server:
        resp = await Api(server.base, token).call("GET", "/api/sessions/gus")
        assert resp.status == 401 and "no longer valid" in resp.json["error"]["message"]
        resp = await Api(server.base, None).call("GET", url)
        assert resp.status == 403 and resp.json["error"]["code"] == "invalid_link"
