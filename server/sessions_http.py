"""REST handlers of health, status and sessions: ensure, inspect, close or purge, execute,
interrupt, restart, and scoped tokens for one user's session."""

from __future__ import annotations

import time

from kernels.errors import SessionNotFound
from kernels.installs import described
from transcript.store.base import StoreUnavailable

from .api import ApiHandler, iso_time
from .auth import Access
from .protocol import ProtocolError, parse_execute, parse_packages


class HealthHandler(ApiHandler):
    """Liveness for a load balancer: 200 while the server serves; `degraded` (still 200:
    executions work) while the store cannot take the transcript's writes."""

    auth_required = False

    def get(self) -> None:
        if self.state.draining:  # a load balancer stops routing here
            self.set_header("Retry-After", "10")
            return self.write_json({"status": "draining"}, 503)
        health = self.state.transcript.health()
        if health["state"] == "ok":
            return self.write_json({"status": "ok"})
        self.write_json(
            {"status": "degraded", "store": {"backend": self.state.store.backend, **health}}
        )


class StatusHandler(ApiHandler):
    """The tenant's own view: its sessions, the sandbox, the store, the memory its sessions'
    replay buffers hold (and the server-wide limit they share). Numbers about the whole
    server (the pool, the disk, other tenants, the total in use) are for operators."""

    async def get(self) -> None:
        store: dict[str, object] = {"backend": self.state.store.backend}
        if not self.state.transcript.degraded:
            try:
                store = await self.state.store.status(self.tenant)
            except StoreUnavailable:
                pass  # reported by the transcript's health from now on
        health = self.state.transcript.health()
        self.write_json(
            {
                "sessions": len(self.state.registry.list(self.tenant)),
                "sandbox": self.state.pool.launcher.mode,
                "store": {**store, **health},
                "replay_memory": self.state.registry.replay_budget.status(self.tenant),
            }
        )


class SessionsHandler(ApiHandler):
    async def get(self) -> None:
        replicas = self.state.replicas
        elsewhere = await replicas.running_elsewhere(self.tenant) if replicas else set()
        records = {
            # closed unless another replica runs it; live sessions here overwrite this below
            r.user: {**r.public(), "state": r.state if r.user in elsewhere else "closed"}
            for r in await self.state.transcript.sessions(self.tenant)
        }
        for session in self.state.registry.list(self.tenant):
            records[session.user] = session.info()
        self.write_json({"sessions": [records[u] for u in sorted(records)]})


class SessionHandler(ApiHandler):
    access = Access.USER

    async def put(self, user: str) -> None:
        user = self.user_arg(user)
        if (found := await self.ensure_session(user)) is None:
            return  # answered by the replica that runs the user
        session, created = found
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
        else:  # the user asked to shut down: variables a culled kernel saved go too
            await self.state.files.area(self.tenant, user).adrop_hibernation()
        if purge:
            # Files and their records are purged whether or not there was ever a session;
            # uploads in flight end with `file_area_purged`.
            had_files = await self.state.files.area(self.tenant, user).apurge()
            await self.state.transcript.delete(self.tenant, user)
            if live is None and record is None and not had_files:
                raise SessionNotFound(f"no session and no files for user {user!r}")
        self.write_json({"user": user, "state": "closed", "purged": purge})


class ExecuteHandler(ApiHandler):
    access = Access.USER

    async def post(self, user: str) -> None:
        user = self.user_arg(user)
        ttl = self.link_ttl()
        settings = self.state.settings
        request = parse_execute(
            self.json_body(), settings.max_code_bytes, settings.limits.max_timeout
        )
        if (found := await self.ensure_session(user)) is None:
            return  # answered by the replica that runs the user
        execution = found[0].submit(
            request.code, request.id, request.timeout, list(request.install_packages)
        )
        cell = await execution.done
        summary = cell.summary()
        summary["files"] = [{**f, "url": self.link(f["url"], ttl)} for f in summary["files"]]
        self.write_json(summary)


class PackagesHandler(ApiHandler):
    """`POST .../packages {"packages": [...]}`: install for the user's session, now."""

    access = Access.USER

    async def post(self, user: str) -> None:
        user = self.user_arg(user)
        body = self.json_body()
        if "packages" not in body:
            raise ProtocolError(400, "missing_field", "'packages' is required")
        requirements = parse_packages(body["packages"])
        if not requirements:
            raise ProtocolError(400, "invalid_field", "'packages' is empty")
        session, _ = await self.state.registry.ensure(self.tenant, user)
        installed = await session.install_packages(list(requirements))
        self.write_json({"packages": [described(p) for p in installed]})


class InterruptHandler(ApiHandler):
    access = Access.USER

    async def post(self, user: str) -> None:
        session = self.state.registry.get(self.tenant, self.user_arg(user))
        self.write_json({"interrupted": session.interrupt()})


class RestartHandler(ApiHandler):
    access = Access.USER

    async def post(self, user: str) -> None:
        session = self.state.registry.get(self.tenant, self.user_arg(user))
        started = time.perf_counter()
        await session.restart()
        self.write_json(
            {**session.info(), "restart_ms": round((time.perf_counter() - started) * 1000, 3)}
        )


class TokenHandler(ApiHandler):
    """`POST .../token {"ttl"?}`: a token for this user's session alone, minted with the
    tenant's key (a token cannot mint another)."""

    async def post(self, user: str) -> None:
        user = self.user_arg(user)
        body = self.json_body() if self._size else {}
        ttl = self.ttl_arg(body.get("ttl"))
        assert self.principal is not None
        token, expires = self.state.auth.mint(self.principal, user, ttl)
        self.write_json({"token": token, "user": user, "expires_at": iso_time(expires)}, 201)
