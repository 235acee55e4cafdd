"""REST handlers of health, status and sessions: ensure, inspect, close or purge, execute,
interrupt, restart."""

from __future__ import annotations

import time

from kernels.errors import SessionNotFound

from .api import ApiHandler
from .protocol import parse_execute


class HealthHandler(ApiHandler):
    auth_required = False

    def get(self) -> None:
        self.write_json({"status": "ok"})


class StatusHandler(ApiHandler):
    """The tenant's own view: its sessions, the sandbox, the store, the memory its sessions'
    replay buffers hold (and the server-wide limit they share). Numbers about the whole
    server (the pool, the disk, other tenants, the total in use) are for operators."""

    async def get(self) -> None:
        self.write_json(
            {
                "sessions": len(self.state.registry.list(self.tenant)),
                "sandbox": self.state.pool.launcher.mode,
                "store": await self.state.store.status(self.tenant),
                "replay_memory": self.state.registry.replay_budget.status(self.tenant),
            }
        )


class SessionsHandler(ApiHandler):
    async def get(self) -> None:
        records = {
            r.user: {**r.public(), "state": "closed"}  # live sessions overwrite this below
            for r in await self.state.transcript.sessions(self.tenant)
        }
        for session in self.state.registry.list(self.tenant):
            records[session.user] = session.info()
        self.write_json({"sessions": [records[u] for u in sorted(records)]})


class SessionHandler(ApiHandler):
    async def put(self, user: str) -> None:
        user = self.user_arg(user)
        session, created = await self.state.registry.ensure(self.tenant, user)
        self.write_json(session.info(), 201 if created else 200)

    async def get(self, user: str) -> None:
        user = self.user_arg(user)
        session = self.state.registry.find(self.tenant, user)
        if session is not None:
            return self.write_json(session.info())
        record = await self.state.transcript.session(self.tenant, user)
        if record is None:
            raise SessionNotFound(f"no session for user {user!r}")
        self.write_json({**record.public(), "state": "closed"})  # no kernel now

    async def delete(self, user: str) -> None:
        user = self.user_arg(user)
        purge = self.get_query_argument("purge", "false").lower() in ("1", "true", "yes")
        live = self.state.registry.find(self.tenant, user)
        record = await self.state.transcript.session(self.tenant, user)
        if live is None and record is None and not purge:
            raise SessionNotFound(f"no session for user {user!r}")
        if live is not None:
            await self.state.registry.close(self.tenant, user)
        if purge:
            # Files and their records are purged whether or not there was ever a session;
            # uploads in flight end with `file_area_purged`.
            had_files = await self.state.files.area(self.tenant, user).apurge()
            await self.state.transcript.delete(self.tenant, user)
            if live is None and record is None and not had_files:
                raise SessionNotFound(f"no session and no files for user {user!r}")
        self.write_json({"user": user, "state": "closed", "purged": purge})


class ExecuteHandler(ApiHandler):
    async def post(self, user: str) -> None:
        user = self.user_arg(user)
        settings = self.state.settings
        request = parse_execute(
            self.json_body(), settings.max_code_bytes, settings.limits.max_timeout
        )
        session, _ = await self.state.registry.ensure(self.tenant, user)
        execution = session.submit(request.code, request.id, request.timeout)
        cell = await execution.done
        self.write_json(cell.summary())


class InterruptHandler(ApiHandler):
    async def post(self, user: str) -> None:
        session = self.state.registry.get(self.tenant, self.user_arg(user))
        self.write_json({"interrupted": session.interrupt()})


class RestartHandler(ApiHandler):
    async def post(self, user: str) -> None:
        session = self.state.registry.get(self.tenant, self.user_arg(user))
        started = time.perf_counter()
        await session.restart()
        self.write_json(
            {**session.info(), "restart_ms": round((time.perf_counter() - started) * 1000, 3)}
        )
