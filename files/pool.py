"""A bounded thread pool, fair between users, for the file area's blocking work.

File work grows with what a user keeps: a listing walks up to 20,000 entries and hashes
files, a commit fsyncs 50 MB. On asyncio's default executor, shared with everything else,
six listings of one big work dir took every thread, and every other user's executions,
uploads and session starts waited behind them. Here each job names its owner (a key, the
(tenant, user)); at most one job per owner runs at a time and owners with jobs queued take
turns (round-robin), so one user holds at most one thread however much they ask for, and
`workers` users are served at once.

Threads are daemons and `close()` cancels what is queued without waiting for what runs, so a
stuck file system cannot hold up SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class PoolClosed(RuntimeError):
    """The pool is shut down: no more jobs."""


@dataclass
class _Job:
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop | None  # None: nobody awaits it (`submit`)
    future: asyncio.Future[Any] | None


class FairPool:
    """`workers` daemon threads running jobs of many owners, one job per owner at a time."""

    def __init__(self, workers: int, name: str = "files") -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self._cond = threading.Condition()
        self._queues: dict[Hashable, deque[_Job]] = {}
        # Owners with jobs queued and none running, in turn order. Invariant: an owner is
        # here iff it has a queue and is not in `_running`.
        self._turns: deque[Hashable] = deque()
        self._running: set[Hashable] = set()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def lane(self, key: Hashable) -> Lane:
        """The place in this pool of one owner: what its file area runs its work through."""
        return Lane(self, key)

    async def run(self, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on a worker, in `key`'s turn; its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put(key, _Job(functools.partial(fn, *args), loop, future))
        return await future  # cancelling the caller leaves a queued job skipped

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` in `key`'s turn without waiting for it (clean-up: after every
        job of `key` already queued, so never concurrently with one). Errors are logged."""
        with contextlib.suppress(PoolClosed):
            self._put(key, _Job(functools.partial(fn, *args), None, None))

    async def close(self, grace: float = 2.0) -> None:
        """Cancel queued jobs, then wait at most `grace` seconds for running ones."""
        with self._cond:
            self._closed = True
            dropped = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._turns.clear()
            self._cond.notify_all()
        for job in dropped:
            if job.future is not None and job.loop is not None:
                _call_soon(job.loop, job.future.cancel)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._cond:
                if not self._running:
                    return
            await asyncio.sleep(0.02)
        log.warning("file pool closed with %d jobs still running", len(self._running))

    def _put(self, key: Hashable, job: _Job) -> None:
        with self._cond:
            if self._closed:
                raise PoolClosed("the file pool is shut down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque()
                if key not in self._running:
                    self._turns.append(key)
                    self._cond.notify()
            queue.append(job)

    def _next(self) -> tuple[Hashable, _Job] | None:
        with self._cond:
            while not self._turns and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            key = self._turns.popleft()
            queue = self._queues[key]
            job = queue.popleft()
            if not queue:
                del self._queues[key]
            self._running.add(key)
            return key, job

    def _done(self, key: Hashable) -> None:
        with self._cond:
            self._running.discard(key)
            if key in self._queues and not self._closed:
                self._turns.append(key)  # behind every owner already waiting: round-robin
                self._cond.notify()

    def _work(self) -> None:
        while (taken := self._next()) is not None:
            key, job = taken
            try:
                self._run(key, job)
            finally:
                # Only now may the owner's next job start: its result reaches the loop after
                # this one's, so the owner's follow-up store writes keep their order.
                self._done(key)

    @staticmethod
    def _run(key: Hashable, job: _Job) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            if job.future is None or not job.future.cancelled():
                result = job.fn()
        except BaseException as exc:  # handed to the awaiting caller
            error = exc
        if job.future is None or job.loop is None:
            if error is not None:
                log.error("file job of %s failed", key, exc_info=error)
            return
        _call_soon(job.loop, _settle, job.future, result, error)


class Lane:
    """One owner's place in a `FairPool`: `run` to await a job, `submit` to leave one."""

    def __init__(self, pool: FairPool, key: Hashable) -> None:
        self.pool = pool
        self.key = key

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.pool.run(self.key, fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.pool.submit(self.key, fn, *args)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(fn, *args)
