"""Client of the kernel session server, for chatbots.

    import kss_client

    async with kss_client.Client("http://127.0.0.1:8765", key) as c:
        s = c.session("alice")
        result = await s.run("6 * 7")
"""

from .client import Client, Session
from .errors import KssError, explain
from .results import (
    Event,
    EventType,
    ExecutionError,
    ExecutionResult,
    ExecutionStatus,
    FileChange,
    FileInfo,
    SessionInfo,
)

__all__ = [
    "Client",
    "Event",
    "EventType",
    "ExecutionError",
    "ExecutionResult",
    "ExecutionStatus",
    "FileChange",
    "FileInfo",
    "KssError",
    "Session",
    "SessionInfo",
    "explain",
]
