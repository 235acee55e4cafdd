"""Waiting for a condition instead of sleeping a fixed time and hoping it happened."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

INTERVAL = 0.02


async def until(
    check: Callable[[], T | Awaitable[T]], timeout: float = 10, interval: float = INTERVAL
) -> T:
    """Poll `check` (a function or a coroutine function) until it returns something true;
    return that. Fails with TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            result: Any = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(interval)
