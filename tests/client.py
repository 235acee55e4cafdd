"""A small real HTTP + WebSocket client for the tests (tornado's own clients). Every answer
and WebSocket message it receives is checked against the server's OpenAPI document
(`tests/openapi_check.py`): an undocumented one fails the test that got it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.openapi_check import check_answer, check_message


@dataclass
class Response:
    status: int
    body: bytes
    headers: Any

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    def __init__(self, base: str, key: str | None) -> None:
        self.base = base
        self.key = key
        self.sockets: list[Socket] = []

    def close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def headers(self, key: str | None = "") -> dict[str, str]:
        key = self.key if key == "" else key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        key: str | None = "",
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is None and method in ("POST", "PUT"):
            data = b""
        request = HTTPRequest(
            self.base + path,
            method=method,
            body=data,
            headers={**self.headers(key), **(headers or {})},
            request_timeout=timeout,
            allow_nonstandard_methods=True,
        )
        resp = await AsyncHTTPClient().fetch(request, raise_error=False)
        answer = Response(resp.code, resp.body or b"", resp.headers)
        check_answer(method, path, answer.status, answer.headers, answer.body)
        return answer

    async def execute(self, user: str, code: str, **extra: Any) -> dict[str, Any]:
        resp = await self.call("POST", f"/api/sessions/{user}/execute", {"code": code, **extra})
        assert resp.status == 200, resp.body
        return resp.json

    async def ws(
        self, user: str, since: int | None = None, key: str | None = "", query: str = ""
    ) -> Socket:
        key = self.key if key == "" else key
        url = self.base.replace("http", "ws", 1) + f"/api/sessions/{user}/ws"
        params = ([f"since={since}"] if since is not None else []) + ([query] if query else [])
        if params:
            url += "?" + "&".join(params)
        conn = await websocket_connect(
            HTTPRequest(url, headers=self.headers(key)), max_message_size=64 * 1024 * 1024
        )
        sock = Socket(conn)
        self.sockets.append(sock)
        return sock


class Socket:
    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn

    async def send(self, frame: Any) -> None:
        await self.conn.write_message(
            frame if isinstance(frame, str | bytes) else json.dumps(frame),
            binary=isinstance(frame, bytes),
        )

    async def recv(self, timeout: float = 30) -> dict[str, Any] | None:
        msg = await asyncio.wait_for(self.conn.read_message(), timeout)
        if msg is None:
            return None
        message = json.loads(msg)
        check_message(message)
        return message

    async def until(self, pred: Any, timeout: float = 30) -> list[dict[str, Any]]:
        """Events up to and including the first one matching `pred`."""
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv(timeout)
                assert event is not None, f"socket closed; got {events}"
                events.append(event)
                if pred(event):
                    return events

    async def run(self, code: str, exec_id: str, wait: float = 30, **extra: Any) -> list[dict]:
        """Execute `code` and return its events up to its `done`."""
        await self.send({"type": "execute", "id": exec_id, "code": code, **extra})
        return await self.until(lambda e: e["type"] == "done" and e.get("id") == exec_id, wait)

    def close(self) -> None:
        self.conn.close()
