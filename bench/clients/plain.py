"""Plain clients: what a user's own script would write, for S2's second row.

For a server, the `websockets` package with its defaults, `json.loads` on every frame, read
until the execution's end; for the floor, jupyter_client's own `execute_interactive`. Each
session counts the frames and bytes one execution made it read.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.clients.base import ExecResult, Stopwatch, timed
from bench.clients.jupyter_ws import apply_message, execute_request
from bench.clients.ours import apply_event


async def open_plain(url: str) -> ClientConnection:
    # proxy=None: a loopback benchmark must not go through a proxy from the environment.
    return await connect(url, proxy=None, max_size=None, open_timeout=30)


class PlainSession:
    """One WebSocket read with `websockets`; `frames`/`frame_bytes` count the last execution's
    reads, every frame on the socket included (status events, other executions)."""

    def __init__(self, conn: ClientConnection, close: Callable[[], Awaitable[None]]) -> None:
        self.conn = conn
        self._close = close
        self.frames = 0
        self.frame_bytes = 0
        self._lock = asyncio.Lock()

    async def execute(self, code: str, timeout_s: float) -> ExecResult:
        async with self._lock:
            self.frames = self.frame_bytes = 0
            return await timed(lambda result: self._run(code, result), timeout_s)

    async def _run(self, code: str, result: ExecResult) -> None:
        raise NotImplementedError

    async def _read(self) -> dict[str, Any]:
        raw = await self.conn.recv()
        self.frames += 1
        self.frame_bytes += len(raw)
        return json.loads(raw)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.conn.close()
        await self._close()


class PlainOursSession(PlainSession):
    """Our WebSocket: send `execute`, read events until its `done`."""

    async def _run(self, code: str, result: ExecResult) -> None:
        exec_id = uuid.uuid4().hex
        await self.conn.send(json.dumps({"type": "execute", "id": exec_id, "code": code}))
        while True:
            event = await self._read()
            if event.get("id") != exec_id:
                continue
            result.messages += 1
            if apply_event(event, result):
                return


class PlainJupyterSession(PlainSession):
    """A Jupyter kernel WebSocket: send `execute_request`, read until its reply and idle."""

    async def _run(self, code: str, result: ExecResult) -> None:
        request = execute_request(code, uuid.uuid4().hex)
        msg_id = request["header"]["msg_id"]
        await self.conn.send(json.dumps(request))
        replied = idle = False
        while not (replied and idle):
            msg = await self._read()
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            result.messages += 1
            got_reply, got_idle = apply_message(msg, result)
            replied = replied or got_reply
            idle = idle or got_idle


class InteractiveSession:
    """The floor's plain client: `AsyncKernelClient.execute_interactive` on a kernel."""

    def __init__(self, kc: Any, close: Callable[[], Awaitable[None]]) -> None:
        self.kc = kc
        self._close = close
        self.frames = 0
        self.frame_bytes = 0

    async def execute(self, code: str, timeout_s: float) -> ExecResult:
        result = ExecResult()
        watch = Stopwatch()
        self.frames = 0

        def hook(msg: dict[str, Any]) -> None:
            self.frames += 1
            result.messages += 1
            apply_message(msg, result)

        try:
            reply = await self.kc.execute_interactive(code, timeout=timeout_s, output_hook=hook)
            result.status = reply["content"]["status"]
        except TimeoutError:
            result.status = "timeout"
        result.elapsed_s = watch.elapsed()
        return result

    async def close(self) -> None:
        await self._close()
