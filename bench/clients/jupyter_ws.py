"""A client of the Jupyter kernel WebSocket protocol (JSON frames), as Kernel Gateway serves it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from tornado.websocket import WebSocketClientConnection

from bench.clients.base import ExecResult, text_plain, timed

PROTOCOL_VERSION = "5.3"


def execute_request(code: str, session: str) -> dict[str, Any]:
    msg_id = uuid.uuid4().hex
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "bench",
            "session": session,
            "date": datetime.now(UTC).isoformat(),
            "version": PROTOCOL_VERSION,
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


def apply_message(msg: dict[str, Any], result: ExecResult) -> tuple[bool, bool]:
    """Fold one of our execution's messages into `result`; return (replied, idle) it signals."""
    msg_type = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
    content = msg.get("content", {})
    if msg_type == "stream":
        result.stdout_bytes += len(content.get("text", "").encode())
    elif msg_type in ("display_data", "execute_result"):
        data = content.get("data", {})
        if "image/png" in data:
            result.images += 1
            result.image_bytes = len(data["image/png"])
        if msg_type == "execute_result":
            result.text = text_plain(data)
    elif msg_type == "error":
        result.error = f"{content.get('ename')}: {content.get('evalue')}"
    elif msg_type == "execute_reply":
        result.status = content.get("status", "unknown")
        return True, False
    elif msg_type == "status" and content.get("execution_state") == "idle":
        return False, True
    return False, False


class JupyterWsSession:
    """One kernel behind a Jupyter kernel WebSocket; executions run one at a time."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.session_id = uuid.uuid4().hex
        self._lock = asyncio.Lock()

    async def execute(self, code: str, timeout_s: float) -> ExecResult:
        async with self._lock:
            return await timed(lambda result: self._run(code, result), timeout_s)

    async def _run(self, code: str, result: ExecResult) -> None:
        request = execute_request(code, self.session_id)
        msg_id = request["header"]["msg_id"]
        await self.conn.write_message(json.dumps(request))
        replied = idle = False
        while not (replied and idle):
            frame = await self.conn.read_message()
            if frame is None:
                result.status = "disconnected"
                return
            if isinstance(frame, bytes):
                continue  # binary frames only come with the v1 subprotocol, which we do not ask
            msg = json.loads(frame)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            result.messages += 1
            got_reply, got_idle = apply_message(msg, result)
            replied = replied or got_reply
            idle = idle or got_idle

    def disconnect(self) -> None:
        self.conn.close()
