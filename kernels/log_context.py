"""Who a log line is about: tenant, user, kernel and execution, carried in a context variable.

A request handler binds the tenant and user once it knows them; a session's worker binds
them, and the kernel and execution id of what it runs. asyncio copies the context into every
task it starts, so a line logged anywhere below carries the fields without being passed
them; a task's bindings never leak to its parent. `server/logs.py` writes them out.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar, Token

FIELDS = ("tenant", "user", "kernel", "execution")

_fields: ContextVar[dict[str, str]] = ContextVar("kss_log_fields", default={})  # noqa: B039 - never mutated


def bind(**fields: str | None) -> Token[dict[str, str]]:
    """Add `fields` (those not None) to this context's; returns the token `unbind` takes."""
    merged = {**_fields.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _fields.set(merged)


def unbind(token: Token[dict[str, str]]) -> None:
    try:
        _fields.reset(token)
    except ValueError:  # set in another context (a callback run elsewhere): clear instead
        _fields.set({})


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def current() -> dict[str, str]:
    return _fields.get()


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record as `record.context` (a formatter writes it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            record.context = _fields.get()
        return True
