"""A session's event log: sequence numbers, a bounded replay buffer, and subscribers.

An optional `sink` receives every (seq, encoded) pair, so the web layer can keep a durable
copy; `last_seq` lets a new log continue the numbering of an earlier one.

Every event gets the next `seq` and is encoded to JSON once; the same string goes to every
subscriber and into the replay buffer. A subscriber that falls too far behind is closed
(it reconnects with `since` and misses nothing the buffer still holds).

Replay buffers are bounded per session (events and bytes) and, through one `ReplayBudget`
shared by every session's log, in total: over the total, the oldest events across all
sessions leave memory first. An event that left memory is still in the transcript, and a
reconnecting socket gets it from there (`server/websocket.py`); old events are the ones a
reconnect needs least, and a session's own recent events stay whatever its neighbours do.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
from collections import Counter, deque
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
    """Encoded events for one watcher, in order, but for the types it `skips`; `None` marks
    the end."""

    def __init__(self, max_bytes: int, skip: frozenset[str] = frozenset()) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._bytes = 0
        self._max_bytes = max_bytes
        self.skip = skip
        self.closed = False
        self.reason: EndReason | None = None

    def _push(self, encoded: str, kind: str = "") -> bool:
        if self.closed:
            return False
        if kind in self.skip:
            return True
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

    def ready(self) -> list[str]:
        """The events already waiting, without waiting: what a watcher can send at once."""
        items = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:  # the end stays for `get`
                self._queue.put_nowait(None)
                break
            self._bytes -= len(item)
            items.append(item)
        return items


class ReplayBudget:
    """Bytes of events every session's replay buffer may hold together; over the limit, the
    oldest events across sessions are dropped from memory first. Counts per owner (tenant)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0
        self._owners: Counter[str] = Counter()
        self._order = itertools.count()  # publication order across every log
        self._heads: list[tuple[int, int, EventLog]] = []  # (order of its oldest, id, log)

    def usage(self, owner: str) -> int:
        return self._owners[owner]

    def status(self, owner: str) -> dict[str, int]:
        return {"bytes": self.usage(owner), "limit_bytes": self.limit}

    def _next(self) -> int:
        return next(self._order)

    def _added(self, log: EventLog, size: int) -> None:
        self.used += size
        self._owners[log.owner] += size
        if not log._ranked:  # the log was empty: its oldest event is this one
            log._ranked = True
            heapq.heappush(self._heads, (log._buffer[0][2], id(log), log))
        self._evict()

    def _removed(self, log: EventLog, size: int) -> None:
        self.used -= size
        self._owners[log.owner] -= size
        if not self._owners[log.owner]:
            del self._owners[log.owner]

    def _forget(self, log: EventLog) -> None:
        """`log` is closed (and empty): no longer rank it."""
        if log._ranked:
            log._ranked = False
            self._heads = [entry for entry in self._heads if entry[2] is not log]
            heapq.heapify(self._heads)

    def _evict(self) -> None:
        heads = self._heads
        while self.used > self.limit and heads:
            order, key, log = heads[0]
            head = log._head_order()
            if head is None:  # emptied by its own bounds or closed; pushed again if it refills
                heapq.heappop(heads)
                log._ranked = False
            elif head != order:  # its oldest left by its own bounds: re-rank it
                heapq.heapreplace(heads, (head, key, log))
            else:
                log._drop_oldest()
                after = log._head_order()
                if after is None:
                    heapq.heappop(heads)
                    log._ranked = False
                else:
                    heapq.heapreplace(heads, (after, key, log))


class EventLog:
    """Numbers, buffers and fans out one session's events."""

    def __init__(
        self,
        max_events: int,
        max_bytes: int,
        subscriber_bytes: int,
        last_seq: int = 0,
        sink: Callable[[int, str], None] | None = None,
        budget: ReplayBudget | None = None,
        owner: str = "",
    ) -> None:
        self.last_seq = last_seq
        self._sink = sink
        self._budget = budget
        self.owner = owner  # whose memory it is, in the budget's counts (the tenant)
        self._buffer: deque[tuple[int, str, int, str]] = deque()  # seq, encoded, order, type
        self._buffer_bytes = 0
        self._ranked = False  # in the budget's ranking of oldest events
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
        budget = self._budget
        kind = event.get("type", "")
        self._buffer.append((seq, encoded, budget._next() if budget is not None else 0, kind))
        self._buffer_bytes += len(encoded)
        if budget is not None:
            budget._added(self, len(encoded))  # may drop the oldest events of any session
        while self._buffer and (
            len(self._buffer) > self._max_events or self._buffer_bytes > self._max_bytes
        ):
            self._drop_oldest()
        for sub in list(self._subscribers):
            if not sub._push(encoded, kind):
                self._subscribers.discard(sub)
        return seq

    def _drop_oldest(self) -> None:
        _, old, _, _ = self._buffer.popleft()
        self._buffer_bytes -= len(old)
        if self._budget is not None:
            self._budget._removed(self, len(old))

    def _head_order(self) -> int | None:
        return self._buffer[0][2] if self._buffer else None

    @property
    def buffered_bytes(self) -> int:
        return self._buffer_bytes

    @property
    def oldest_seq(self) -> int:
        """The first seq still replayable from memory (last_seq + 1 when empty)."""
        return self._buffer[0][0] if self._buffer else self.last_seq + 1

    def replay(self, since: int) -> list[str]:
        return [encoded for seq, encoded, _, _ in self._buffer if seq > since]

    def subscribe(
        self, since: int | None = None, skip: frozenset[str] = frozenset()
    ) -> Subscription:
        """Watch new events but those of the types in `skip`; with `since`, first receive
        the buffered ones after it."""
        sub = Subscription(self._subscriber_bytes, skip)
        if since is not None:
            for seq, encoded, _, kind in self._buffer:
                if seq > since:
                    sub._push(encoded, kind)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        """End every subscription and give the buffer's memory back (a closed session
        replays from the transcript)."""
        for sub in list(self._subscribers):
            sub.close(EndReason.SESSION_CLOSED)
        self._subscribers.clear()
        while self._buffer:
            self._drop_oldest()
        if self._budget is not None:
            self._budget._forget(self)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
