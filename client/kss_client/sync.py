"""A blocking facade for synchronous chatbot frameworks, generated over the async client.

    with SyncClient(url, key) as c:
        s = c.session("alice")
        print(s.run("6 * 7").result)
        messages += s.handle_tool_calls(message.tool_calls)

No method body is written twice: each blocking method is `blocking(<async function>)`,
which runs that coroutine on the client's own event loop in a daemon thread (a `Portal`)
and waits for it. The async function's signature and docstring carry over (ParamSpec).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from ._http import DEFAULT_TIMEOUT_S
from .client import Client, Session
from .codeblocks import run_code_blocks
from .results import Event
from .tools import handle_tool_call, handle_tool_calls

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Portal:
    """An asyncio event loop in a daemon thread; blocking calls run coroutines on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kss-client-loop", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def iterate(self, events: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await anext(events)
            except StopAsyncIteration:
                return False, None

        async def close() -> None:
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()

        try:
            while True:
                more, item = self.call(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            self.call(close())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def blocking(
    fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Any, P], R]:
    """A method calling `fn(self._target, ...)` on `self._portal` and waiting for it."""

    def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        portal: Portal = self._portal
        return portal.call(fn(self._target, *args, **kwargs))

    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


class SyncSession:
    """`Session`, blocking; also carries the tool-call and code-block helpers."""

    def __init__(self, portal: Portal, session: Session) -> None:
        self._portal = portal
        self._target = session

    @property
    def user(self) -> str:
        return self._target.user

    def file_url(self, name: str) -> str:
        return self._target.file_url(name)

    def stream(self, code: str, timeout: float | None = None) -> Iterator[Event]:
        """`Session.stream`, as a blocking iterator."""
        return self._portal.iterate(self._target.stream(code, timeout))

    ensure = blocking(Session.ensure)
    info = blocking(Session.info)
    run = blocking(Session.run)
    upload = blocking(Session.upload)
    download = blocking(Session.download)
    delete_file = blocking(Session.delete_file)
    files = blocking(Session.files)
    notebook = blocking(Session.notebook)
    note = blocking(Session.note)
    interrupt = blocking(Session.interrupt)
    restart = blocking(Session.restart)
    close = blocking(Session.close)
    handle_tool_calls = blocking(handle_tool_calls)
    handle_tool_call = blocking(handle_tool_call)
    run_code_blocks = blocking(run_code_blocks)


async def _open(url: str, api_key: str, timeout: float) -> Client:
    return Client(url, api_key, timeout=timeout)  # made on the portal's loop, used there


class SyncClient:
    """`Client`, blocking. Close it (or use `with`) to stop its thread."""

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._portal = Portal()
        self._target = self._portal.call(_open(url, api_key, timeout))

    def session(self, user: str) -> SyncSession:
        return SyncSession(self._portal, self._target.session(user))

    health = blocking(Client.health)
    sessions = blocking(Client.sessions)
    _aclose = blocking(Client.aclose)

    def close(self) -> None:
        self._aclose()
        self._portal.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
