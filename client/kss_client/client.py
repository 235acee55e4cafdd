"""The async client: a `Client` per server and API key, a `Session` per user.

    async with Client("http://127.0.0.1:8765", key) as c:
        s = c.session("alice")
        result = await s.run("x = 21; x * 2")      # ExecutionResult, result["text/plain"] "42"
        async for event in s.stream("print(x)"):   # Event, ..., done
            ...

A `Session` is a handle, not a connection: the server creates the user's session on the
first call that needs it. HTTP failures raise `KssError`; an execution that fails is a
result (`status` `error` / `timeout`), never an exception.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from ._http import DEFAULT_TIMEOUT_S, Http
from .errors import BAD_ANSWER, KssError
from .results import Event, ExecutionResult, FileInfo, SessionInfo
from .stream import execution_events

# The REST execute call waits for the whole execution: the answer may take as long as the
# execution's timeout (the server's default is at most its --max-exec-timeout, 600 s).
ANSWER_MARGIN_S = 30.0
SERVER_MAX_TIMEOUT_S = 600.0
UPLOAD_CHUNK = 1024 * 1024

Page = Callable[[str | None], Awaitable[Any]]


async def follow_pages(fetch: Page) -> list[Any]:
    """Every item of a listing `{"files": [...], "next": cursor}`: `fetch(after)` gets one
    page; a listing without `next` (or with `next: null`) is one page."""
    items: list[Any] = []
    after: str | None = None
    seen: set[str] = set()
    while True:
        page = await fetch(after)
        if not isinstance(page, dict) or not isinstance(page.get("files"), list):
            raise KssError(BAD_ANSWER, "a file listing without a 'files' list")
        items += page["files"]
        cursor = page.get("next")
        if cursor in (None, "") or str(cursor) in seen:
            return items
        after = str(cursor)
        seen.add(after)  # a server that repeats a cursor must not loop us forever


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, UPLOAD_CHUNK):
            yield chunk


class Session:
    """One user's kernel session on the server."""

    def __init__(self, http: Http, user: str) -> None:
        self._http = http
        self.user = user
        self.path = f"/api/sessions/{quote(user, safe='')}"

    def __repr__(self) -> str:
        return f"Session({self.user!r} on {self._http.base})"

    @property
    def base_url(self) -> str:
        return self._http.base

    def file_url(self, name: str) -> str:
        """The absolute download URL of a file in this user's work dir."""
        return f"{self._http.base}{self.path}/files/{quote(name, safe='/')}"

    async def ensure(self) -> SessionInfo:
        """Create the session (claim a warm kernel) unless it exists."""
        return SessionInfo.from_json(await self._http.json("PUT", self.path))

    async def info(self) -> SessionInfo:
        return SessionInfo.from_json(await self._http.json("GET", self.path))

    async def run(self, code: str, timeout: float | None = None) -> ExecutionResult:
        """Run `code` and return its whole result; `timeout` in seconds (server default
        when None). Failed code is a result with `status` `error`; HTTP errors raise."""
        body: dict[str, Any] = {"code": code}
        if timeout is not None:
            body["timeout"] = timeout
        wait = (SERVER_MAX_TIMEOUT_S if timeout is None else timeout) + ANSWER_MARGIN_S
        answer = await self._http.json("POST", f"{self.path}/execute", json_body=body, timeout=wait)
        return ExecutionResult.from_json(answer, self._http.base)

    def stream(self, code: str, timeout: float | None = None) -> AsyncIterator[Event]:
        """The events of running `code` as they happen, ending with `done`; reconnects with
        `since` by itself and never yields an event twice. Close it early with `aclose()`."""
        frame: dict[str, Any] = {"type": "execute", "id": uuid.uuid4().hex, "code": code}
        if timeout is not None:
            frame["timeout"] = timeout
        return execution_events(self._http.base, self.path, self._http.api_key, frame)

    async def upload(self, name: str, data: bytes | str | PathLike[str]) -> FileInfo:
        """Put `data` (bytes, or the path of a local file, streamed) as `name`."""
        content: bytes | AsyncIterable[bytes]
        content = data if isinstance(data, bytes) else _file_chunks(Path(data))
        answer = await self._http.json(
            "PUT", f"{self.path}/files/{quote(name, safe='/')}", content=content, timeout=600
        )
        return FileInfo.from_json(answer, self._http.base, self.path)

    async def download(self, name: str) -> bytes:
        """The bytes of a file in the work dir."""
        response = await self._http.request(
            "GET", f"{self.path}/files/{quote(name, safe='/')}", timeout=600
        )
        return response.content

    async def delete_file(self, name: str) -> None:
        await self._http.request("DELETE", f"{self.path}/files/{quote(name, safe='/')}")

    async def files(self) -> list[FileInfo]:
        """Every file in the work dir (follows the listing's `next` cursor when there is one)."""

        async def page(after: str | None) -> Any:
            params = None if after is None else {"after": after}
            return await self._http.json("GET", f"{self.path}/files", params=params)

        return [FileInfo.from_json(f, self._http.base, self.path) for f in await follow_pages(page)]

    async def notebook(self, since_restart: bool = False, setup: bool = False) -> dict[str, Any]:
        """The session as a Jupyter notebook (nbformat 4, parsed). `setup`: with the server's
        setup cell first (`load_file`, `FILES`), to run it elsewhere; left out by default,
        so what a model reads is the session's own cells."""
        params = {"since_restart": str(since_restart).lower(), "setup": str(setup).lower()}
        response = await self._http.request(
            "GET", f"{self.path}/notebook", params=params, timeout=120
        )
        try:
            notebook = json.loads(response.content)
        except ValueError as exc:
            raise KssError(BAD_ANSWER, "the notebook is not JSON") from exc
        if not isinstance(notebook, dict):
            raise KssError(BAD_ANSWER, "the notebook is not a JSON object")
        return notebook

    async def note(self, markdown: str) -> int:
        """Add a markdown cell to the transcript; returns its `seq`."""
        body = {"markdown": markdown}
        answer = await self._http.json("POST", f"{self.path}/notes", json_body=body)
        return int(answer["seq"])

    async def interrupt(self) -> bool:
        """Interrupt the running execution; False when nothing ran."""
        answer = await self._http.json("POST", f"{self.path}/interrupt")
        return bool(answer.get("interrupted"))

    async def restart(self) -> SessionInfo:
        """Replace the kernel: every variable is gone; a running execution ends `aborted`."""
        answer = await self._http.json("POST", f"{self.path}/restart", timeout=120)
        return SessionInfo.from_json(answer)

    async def close(self, purge: bool = False) -> None:
        """Shut the kernel down (notebook and files stay unless `purge`)."""
        params = {"purge": "true"} if purge else None
        await self._http.request("DELETE", self.path, params=params)


class Client:
    """A server and an API key; `session(user)` gives a user's session."""

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """`url` is the server's root (`/api` optional); `timeout` bounds every call but
        `run`, which waits for its execution."""
        self._http = Http(url, api_key, timeout=timeout)

    @property
    def base_url(self) -> str:
        return self._http.base

    def session(self, user: str) -> Session:
        return Session(self._http, user)

    async def health(self) -> bool:
        """True when the server answers its health check."""
        answer = await self._http.json("GET", "/api/health")
        return bool(answer.get("status") == "ok")

    async def sessions(self) -> list[SessionInfo]:
        """This tenant's live and recorded sessions."""
        answer = await self._http.json("GET", "/api/sessions")
        return [SessionInfo.from_json(s) for s in answer.get("sessions", [])]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
