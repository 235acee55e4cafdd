"""One execution over the session WebSocket: its events as they happen, resumed after drops.

The execute frame is sent once. When the socket drops, the stream reconnects with
`?since=<last seq seen>` and the server replays what was missed (from memory or the
durable transcript); events at or below the last seen `seq` are skipped, so no event is
yielded twice and none is lost. A socket that drops before the server has sent anything
for this execution cannot tell whether the code was taken, so that raises `KssError`
(`disconnected`) rather than guess and risk running the code twice.

`websockets` (asyncio implementation) because it is the maintained, typed, asyncio-native
client with keep-alive pings, which turn a silently dead connection into a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .errors import BAD_ANSWER, DISCONNECTED, UNREACHABLE, KssError
from .results import Event, EventType

MAX_FRAME = 256 * 1024 * 1024  # the server sends a coalesced stream or an image in one frame
RECONNECTS = 5
BACKOFF_S = 0.2


def ws_url(base: str, user_path: str, since: int | None) -> str:
    url = base.replace("http", "ws", 1) + user_path + "/ws"
    return url if since is None else f"{url}?{urlencode({'since': since})}"


def _rejection(status: InvalidStatus) -> KssError:
    response = status.response
    try:
        err = json.loads(response.body or b"")["error"]
        return KssError(str(err["code"]), str(err.get("message", "")), response.status_code)
    except (ValueError, KeyError, TypeError):
        return KssError("websocket_refused", str(status), response.status_code)


async def open_socket(url: str, api_key: str) -> ClientConnection:
    """A connected socket with Nagle off, or `KssError` saying why not."""
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {api_key}"},
            max_size=MAX_FRAME,
            open_timeout=10,
        )
    except InvalidStatus as exc:
        raise _rejection(exc) from exc
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise KssError(UNREACHABLE, f"cannot open {url.split('?')[0]}: {exc!r}") from exc
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ws


async def execution_events(
    base: str,
    user_path: str,
    api_key: str,
    frame: dict[str, Any],
    *,
    reconnects: int = RECONNECTS,
) -> AsyncIterator[Event]:
    """Events of the execution `frame` asks for, up to and including its `done`.

    `gap` events (replay no longer available) are yielded too, so a caller can tell.
    """
    exec_id = frame["id"]
    last_seq: int | None = None
    acknowledged = False
    drops = 0  # in a row, without an event between them
    ws = await open_socket(ws_url(base, user_path, None), api_key)
    try:
        await ws.send(json.dumps(frame))
        while True:
            try:
                async for raw in ws:
                    event = Event.from_json(json.loads(raw))
                    if event.seq is not None:
                        if last_seq is not None and event.seq <= last_seq:
                            continue  # replayed twice: already yielded
                        last_seq = event.seq
                    drops = 0
                    if event.type == EventType.GAP:
                        yield event
                        continue
                    if event.exec_id != exec_id:
                        continue
                    if event.type == EventType.REJECTED:
                        err = event.get("error") or {}
                        raise KssError(str(err.get("code")), str(err.get("message", "")))
                    acknowledged = True
                    yield event
                    if event.is_done:
                        return
            except ConnectionClosed:
                pass
            except ValueError as exc:
                raise KssError(BAD_ANSWER, f"unreadable event: {exc!r}") from exc
            await ws.close()
            if not acknowledged:
                raise KssError(
                    DISCONNECTED,
                    "the WebSocket closed before the server acknowledged the execution",
                )
            drops += 1
            if drops > reconnects:
                raise KssError(DISCONNECTED, f"the WebSocket dropped {drops} times in a row")
            ws = await _reconnect(ws_url(base, user_path, last_seq), api_key, reconnects)
    finally:
        await ws.close()


async def _reconnect(url: str, api_key: str, tries: int) -> ClientConnection:
    """A new socket, retried with exponential backoff while the server cannot be reached."""
    for attempt in range(tries):
        if attempt:
            await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
        try:
            return await open_socket(url, api_key)
        except KssError as exc:
            if exc.code != UNREACHABLE:
                raise
    raise KssError(DISCONNECTED, f"could not reconnect after {tries} tries")
