"""A session's event log: sequence numbers, a bounded replay buffer, and subscribers.

An optional `sink` receives every (seq, encoded) pair, so the web layer can keep a durable
copy; `last_seq` lets a new log continue the numbering of an earlier one.

Every event gets the next `seq` and is encoded to JSON once; the same string goes to every
subscriber and into the replay buffer. A subscriber that falls too far behind is closed
(it reconnects with `since` and misses nothing the buffer still holds).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)


class EndReason(Enum):
    """Why a subscription ended, with the WebSocket close code that tells a client."""

    BEHIND = (4000, "subscriber fell behind; reconnect with since=<last seq>")
    SESSION_CLOSED = (1001, "session closed")

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = text


class Subscription:
    """Encoded events for one watcher, in order; `None` marks the end."""

    def __init__(self, max_bytes: int) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._bytes = 0
        self._max_bytes = max_bytes
        self.closed = False
        self.reason: EndReason | None = None

    def _push(self, encoded: str) -> bool:
        if self.closed:
            return False
        self._bytes += len(encoded)
        if self._bytes > self._max_bytes:
            self.close(EndReason.BEHIND)
            return False
        self._queue.put_nowait(encoded)
        return True

    def close(self, reason: EndReason) -> None:
        if not self.closed:
            self.closed = True
            self.reason = reason
            self._queue.put_nowait(None)

    async def get(self) -> str | None:
        """The next encoded event, or None once the subscription has ended."""
        item = await self._queue.get()
        if item is not None:
            self._bytes -= len(item)
        return item


class EventLog:
    """Numbers, buffers and fans out one session's events."""

    def __init__(
        self,
        max_events: int,
        max_bytes: int,
        subscriber_bytes: int,
        last_seq: int = 0,
        sink: Callable[[int, str], None] | None = None,
    ) -> None:
        self.last_seq = last_seq
        self._sink = sink
        self._buffer: deque[tuple[int, str]] = deque()
        self._buffer_bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._subscriber_bytes = subscriber_bytes
        self._subscribers: set[Subscription] = set()

    def publish(self, event: dict[str, Any], members: str | None = None) -> int:
        """Number, encode, buffer and fan out `event`; return its seq.

        `members`, when given, is the event already encoded as JSON object members
        (without braces or seq), used instead of encoding the dict again.
        """
        self.last_seq += 1
        seq = self.last_seq
        event["seq"] = seq
        if members is not None:
            encoded = f'{{{members},"seq":{seq}}}'
        else:
            encoded = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        if self._sink is not None:
            self._sink(seq, encoded)
        self._buffer.append((seq, encoded))
        self._buffer_bytes += len(encoded)
        while self._buffer and (
            len(self._buffer) > self._max_events or self._buffer_bytes > self._max_bytes
        ):
            _, old = self._buffer.popleft()
            self._buffer_bytes -= len(old)
        for sub in list(self._subscribers):
            if not sub._push(encoded):
                self._subscribers.discard(sub)
        return seq

    @property
    def oldest_seq(self) -> int:
        """The first seq still replayable from memory (last_seq + 1 when empty)."""
        return self._buffer[0][0] if self._buffer else self.last_seq + 1

    def replay(self, since: int) -> list[str]:
        return [encoded for seq, encoded in self._buffer if seq > since]

    def subscribe(self, since: int | None = None) -> Subscription:
        """Watch new events; with `since`, first receive the buffered ones after it."""
        sub = Subscription(self._subscriber_bytes)
        if since is not None:
            for encoded in self.replay(since):
                sub._push(encoded)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        for sub in list(self._subscribers):
            sub.close(EndReason.SESSION_CLOSED)
        self._subscribers.clear()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
