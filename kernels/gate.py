"""`SessionGate`: whether this server may run a user's kernel, asked by the registry before
it creates a session and told when it closes one.

One server alone may always (`OpenGate`). Replicas sharing a store answer with a lease
(`server/replicas.py`): a user's kernel runs on one replica at a time, and a replica that
asks for a user another one runs gets `SessionElsewhere` instead of starting a kernel.
"""

from __future__ import annotations

from typing import Protocol


class SessionGate(Protocol):
    async def claim(self, tenant: str, user: str) -> None:
        """Before a session of (tenant, user) is created here; raises `SessionElsewhere`
        when another server runs it."""
        ...

    async def release(self, tenant: str, user: str) -> None:
        """The session of (tenant, user) here is closed (or was never created)."""
        ...


class OpenGate:
    """The gate of a server alone: every user's kernel runs here."""

    async def claim(self, tenant: str, user: str) -> None:
        return None

    async def release(self, tenant: str, user: str) -> None:
        return None
