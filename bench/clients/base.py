"""What every system under test offers the scenarios: sessions that execute code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tornado.websocket import WebSocketClientConnection


@dataclass
class ExecResult:
    """What a client saw of one execution, from sending the code to done/idle."""

    status: str = "pending"
    elapsed_s: float = 0.0
    stdout_bytes: int = 0
    messages: int = 0
    images: int = 0
    image_bytes: int = 0  # base64 characters of the last image/png
    text: str = ""
    error: str = ""
    packages: dict[str, str] = field(default_factory=dict)  # ours: name -> installed/cached/...

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Stopwatch:
    start: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


async def timed(run: Callable[[ExecResult], Awaitable[None]], timeout_s: float) -> ExecResult:
    """`run` filling in a new result, timed, as `timeout` if it takes over `timeout_s`."""
    result = ExecResult()
    watch = Stopwatch()
    try:
        async with asyncio.timeout(timeout_s):
            await run(result)
    except TimeoutError:
        result.status = "timeout"
    result.elapsed_s = watch.elapsed()
    return result


class Session(Protocol):
    """One user's kernel, as a client of the system sees it."""

    async def execute(self, code: str, timeout_s: float) -> ExecResult:
        """Run `code`; return when the system says it is done (ours) or idle + replied."""
        ...

    async def close(self) -> None:
        """Disconnect and shut the user's kernel down."""
        ...


class System(Protocol):
    """A system under test: started and stopped by the runner, opened by the scenarios."""

    name: str
    label: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def open_session(self, user: str) -> Session:
        """From 'this user has nothing' to a session ready to take code."""
        ...

    def memory(self) -> tuple[int | None, list[int]]:
        """RSS of the server process (None when there is none) and of each kernel process."""
        ...

    def settings(self) -> dict[str, Any]:
        """How this system was run, for the table notes and the JSON."""
        ...


def set_nodelay(conn: WebSocketClientConnection) -> None:
    """Nagle off on the client's end of a WebSocket (tornado keeps the socket on `protocol`)."""
    protocol = conn.protocol
    if protocol is not None:
        protocol.set_nodelay(True)


def describe(exc: BaseException) -> str:
    """An exception, with the body of an HTTP error response when there is one."""
    response = getattr(exc, "response", None)
    body = getattr(response, "body", None)
    if body:
        return f"{exc!r}: {body[:300].decode(errors='replace')}"
    return repr(exc)


def text_plain(data: Any) -> str:
    if isinstance(data, dict):
        value = data.get("text/plain", "")
        return "".join(value) if isinstance(value, list) else str(value)
    return ""
