"""`SessionRegistry`: (tenant, user) -> `KernelSession`, with limits and idle culling."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from .errors import CapacityExceeded, Draining, SessionNotFound
from .events import ReplayBudget
from .gate import OpenGate, SessionGate
from .installs import PackageSource
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
        packages: PackageSource | None = None,
        gate: SessionGate | None = None,
        replay_budget: ReplayBudget | None = None,
    ) -> None:
        self.pool = pool
        self.limits = limits
        self.work_dir_for = work_dir_for
        self.observer: SessionObserver = observer or NoObserver()
        self.packages = packages
        self.max_sessions = max_sessions
        self.max_per_tenant = max_sessions_per_tenant or max_sessions
        self.gate: SessionGate = gate or OpenGate()
        self.replay_budget = replay_budget or ReplayBudget(1 << 62)  # shared by every session
        self._sessions: dict[Key, KernelSession] = {}
        self._creating: dict[Key, asyncio.Future[KernelSession]] = {}
        self.draining = False
        # Sessions being closed: a new session of the same user waits for its kernel to
        # have saved its variables, so that it finds them.
        self._closing: dict[Key, asyncio.Future[None]] = {}

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

    def all(self) -> list[KernelSession]:
        """Every live session of every tenant (for operators' numbers)."""
        return list(self._sessions.values())

    def keys(self) -> list[Key]:
        """(tenant, user) of every session, live or being created."""
        return [*self._sessions, *self._creating]

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
            if self.draining:
                raise Draining("the server is shutting down and takes no new sessions")
            closing = self._closing.get(key)
            if closing is not None:
                await asyncio.shield(closing)
                continue
            if not await self._make_room(tenant):
                break
        future: asyncio.Future[KernelSession] = asyncio.get_running_loop().create_future()
        self._creating[key] = future
        claimed = False
        try:
            await self.gate.claim(tenant, user)  # SessionElsewhere: another server runs it
            claimed = True
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
                self.packages,
                self.replay_budget,
            )
            self._sessions[key] = session
            try:
                await session.ensure_kernel()
            except BaseException:
                self._sessions.pop(key, None)
                await session.close()
                raise
            session.draining = self.draining  # a drain that began while it started
            log.info("session %s/%s created", tenant, user)
            await self._notify(session)
            future.set_result(session)
            return session, True
        except BaseException as exc:
            if claimed:
                await self._release(tenant, user)
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
        await self.close(*victim, hibernate=True)
        self.pool.stats.kernels_culled += 1
        return True

    def _least_recently_used_idle(self, tenant: str | None) -> Key | None:
        idle = [
            (bool(s.events.subscriber_count), s.last_activity, key)
            for key, s in self._sessions.items()
            if not s.busy and (tenant is None or key[0] == tenant)
        ]
        return min(idle)[2] if idle else None

    async def close(self, tenant: str, user: str, hibernate: bool = False) -> None:
        """Close the user's session; `hibernate` when it is closed to free its kernel (its
        variables are saved for the next session), not when the user asked."""
        key = (tenant, user)
        session = self._sessions.pop(key, None)
        if session is None:
            raise SessionNotFound(f"no session for user {user!r}")
        done = self._closing[key] = asyncio.get_running_loop().create_future()
        try:
            await session.close(hibernate)
        finally:
            del self._closing[key]
            done.set_result(None)
        log.info("session %s/%s closed", tenant, user)
        await self._notify(session)
        await self._release(tenant, user)

    async def _release(self, tenant: str, user: str) -> None:
        try:
            await self.gate.release(tenant, user)
        except Exception:
            log.exception("gate failed to release %s/%s", tenant, user)

    async def _notify(self, session: KernelSession) -> None:
        try:
            await self.observer.session_changed(session)
        except Exception:
            log.exception("observer failed on session %s/%s", session.tenant, session.user)

    async def cull_idle(self, idle_seconds: float, now: float | None = None) -> list[Key]:
        """Close sessions with no execution activity for `idle_seconds` and nothing queued;
        their variables hibernate."""
        now = time.time() if now is None else now

        def stale(s: KernelSession | None) -> bool:
            return s is not None and not s.busy and now - s.last_activity > idle_seconds

        culled = []
        for key in [key for key, s in self._sessions.items() if stale(s)]:
            # Hibernating takes a while: one that became busy meanwhile is left alone.
            if not stale(self._sessions.get(key)):
                continue
            log.info("culling idle session %s/%s", *key)
            await self.close(*key, hibernate=True)
            culled.append(key)
            self.pool.stats.kernels_culled += 1
        return culled

    async def drain(self, timeout: float) -> int:
        """Take no new sessions or executions; give what was accepted `timeout` seconds to
        end, then interrupt what still runs and abort what is queued, and give the
        interrupted the interrupt grace to end. Returns how many were cut short."""
        self.draining = True
        for session in self._sessions.values():
            session.draining = True
        pending = [f for s in self._sessions.values() for f in s.pending()]
        if pending:
            log.info("draining: %d executions may run for up to %g s", len(pending), timeout)
            await asyncio.wait(pending, timeout=timeout)
        late_sessions = [s for s in self._sessions.values() if s.busy]
        if not late_sessions:
            return 0
        cut = sum(len(s.pending()) for s in late_sessions)
        log.warning("draining: interrupting %d executions still running or queued", cut)
        for session in late_sessions:
            session.abandon()
        running = [f for s in late_sessions for f in s.pending()]
        if running:
            await asyncio.wait(running, timeout=self.limits.interrupt_grace + 1)
        return cut

    async def close_all(self) -> None:
        """Close every session (a graceful shutdown): idle ones hibernate, all at once, so
        shutdown waits at most about one `hibernate_timeout`."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close(hibernate=True) for s in sessions), return_exceptions=True)
        for session in sessions:
            await self._notify(session)
        await asyncio.gather(*(self._release(s.tenant, s.user) for s in sessions))
