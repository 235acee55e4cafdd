"""`SessionRegistry`: (tenant, user) -> `KernelSession`, with limits and idle culling."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from .errors import CapacityExceeded, SessionNotFound
from .events import ReplayBudget
from .limits import Limits
from .pool import KernelPool
from .session import KernelSession, NoObserver, SessionObserver

log = logging.getLogger(__name__)

Key = tuple[str, str]


class SessionRegistry:
    """Every live session of this server, one per (tenant, user)."""

    def __init__(
        self,
        pool: KernelPool,
        limits: Limits,
        work_dir_for: Callable[[str, str], Path],
        observer: SessionObserver | None = None,
        max_sessions: int = 100,
        max_sessions_per_tenant: int = 0,
        replay_budget: ReplayBudget | None = None,
    ) -> None:
        self.pool = pool
        self.limits = limits
        self.work_dir_for = work_dir_for
        self.observer: SessionObserver = observer or NoObserver()
        self.max_sessions = max_sessions
        self.max_per_tenant = max_sessions_per_tenant or max_sessions
        self.replay_budget = replay_budget or ReplayBudget(1 << 62)  # shared by every session
        self._sessions: dict[Key, KernelSession] = {}
        self._creating: dict[Key, asyncio.Future[KernelSession]] = {}

    def get(self, tenant: str, user: str) -> KernelSession:
        session = self._sessions.get((tenant, user))
        if session is None:
            raise SessionNotFound(f"no session for user {user!r}")
        return session

    def find(self, tenant: str, user: str) -> KernelSession | None:
        return self._sessions.get((tenant, user))

    def list(self, tenant: str) -> list[KernelSession]:
        return [s for (t, _), s in self._sessions.items() if t == tenant]

    def count(self) -> int:
        return len(self._sessions)

    async def ensure(self, tenant: str, user: str) -> tuple[KernelSession, bool]:
        """The user's session, creating it (and claiming a kernel) if needed."""
        key = (tenant, user)
        while True:  # reclaiming a slot awaits: look again afterwards
            session = self._sessions.get(key)
            if session is not None:
                return session, False
            pending = self._creating.get(key)
            if pending is not None:
                return await asyncio.shield(pending), False
            if not await self._make_room(tenant):
                break
        future: asyncio.Future[KernelSession] = asyncio.get_running_loop().create_future()
        self._creating[key] = future
        try:
            work_dir = self.work_dir_for(tenant, user)
            work_dir.mkdir(parents=True, exist_ok=True)
            resume = await self.observer.resume(tenant, user)
            session = KernelSession(
                tenant,
                user,
                work_dir,
                self.pool,
                self.limits,
                self.observer,
                resume,
                self.replay_budget,
            )
            self._sessions[key] = session
            try:
                await session.ensure_kernel()
            except BaseException:
                self._sessions.pop(key, None)
                await session.close()
                raise
            log.info("session %s/%s created", tenant, user)
            await self._notify(session)
            future.set_result(session)
            return session, True
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # consumed here; waiters re-raise it
            raise
        finally:
            self._creating.pop(key, None)

    def _count(self, tenant: str | None = None) -> int:
        keys = [*self._sessions, *self._creating]
        return len(keys) if tenant is None else sum(1 for t, _ in keys if t == tenant)

    async def _make_room(self, tenant: str) -> bool:
        """False when there is room under both caps; else reclaim the least recently used
        idle session (of the tenant when the tenant's cap is reached) and return True. So
        one tenant cannot lock the others out, and a full server serves a new user rather
        than keep an idle one."""
        tenant_full = self._count(tenant) >= self.max_per_tenant
        if not tenant_full and self._count() < self.max_sessions:
            return False
        victim = self._least_recently_used_idle(tenant if tenant_full else None)
        if victim is None:
            scope = f"tenant {tenant!r}'s" if tenant_full else "the server's"
            limit = self.max_per_tenant if tenant_full else self.max_sessions
            raise CapacityExceeded(
                f"{scope} limit of {limit} sessions is reached and all of them are busy"
            )
        log.info("reclaiming idle session %s/%s for a new one", *victim)
        await self.close(*victim)
        return True

    def _least_recently_used_idle(self, tenant: str | None) -> Key | None:
        idle = [
            (bool(s.events.subscriber_count), s.last_activity, key)
            for key, s in self._sessions.items()
            if not s.busy and (tenant is None or key[0] == tenant)
        ]
        return min(idle)[2] if idle else None

    async def close(self, tenant: str, user: str) -> None:
        session = self._sessions.pop((tenant, user), None)
        if session is None:
            raise SessionNotFound(f"no session for user {user!r}")
        await session.close()
        log.info("session %s/%s closed", tenant, user)
        await self._notify(session)

    async def _notify(self, session: KernelSession) -> None:
        try:
            await self.observer.session_changed(session)
        except Exception:
            log.exception("observer failed on session %s/%s", session.tenant, session.user)

    async def cull_idle(self, idle_seconds: float, now: float | None = None) -> list[Key]:
        """Close sessions with no execution activity for `idle_seconds` and nothing queued."""
        now = time.time() if now is None else now
        stale = [
            key
            for key, s in self._sessions.items()
            if not s.busy and now - s.last_activity > idle_seconds
        ]
        for tenant, user in stale:
            log.info("culling idle session %s/%s", tenant, user)
            await self.close(tenant, user)
        return stale

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        for session in sessions:
            await self._notify(session)
