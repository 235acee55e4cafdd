"""Several server replicas sharing one MongoDB (and one data dir): who runs a user's kernel.

A user's kernel runs on one replica at a time, the holder of the user's lease in MongoDB
(`transcript/store/leases.py`). `LeaseGate` is the registry's `SessionGate`: it takes the
lease before a kernel starts (losing a race is `SessionElsewhere`, never a second kernel)
and gives it back when the session closes. `LeaseKeeper` renews this replica's leases every
third of their life, and closes a session whose lease another replica took meanwhile (this
one was cut off from MongoDB for longer than a lease). `Replicas.elsewhere` tells the web
layer whether another live replica runs a user, so it forwards the request there
(`server/forwarding.py`). When a replica dies its leases expire, and the next request for
its users takes them over: a fresh kernel, the transcript and seq continuing from the store,
and the cells the dead replica left running recovered as `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tornado.httputil import HTTPServerRequest
from tornado.websocket import WebSocketHandler

from kernels.errors import SessionElsewhere
from kernels.registry import SessionRegistry
from kernels.session import KernelSession
from transcript.store.base import StoreUnavailable
from transcript.store.leases import Lease, Leases
from transcript.transcript import Transcript

from .forwarding import HEADER, Forwarder, OwnerUnreachable, SocketPipe
from .protocol import ProtocolError

log = logging.getLogger(__name__)

OWNER_CACHE_SECONDS = 1.0
# How many renewals of an unanswering owner's lease a request waits out before it is refused.
EXPIRY_ROUNDS = 3
OWNERS_CACHED = 10_000  # past this, expired entries are dropped


class Replicas:
    """This replica among the others: its id and URL, the leases, the gate."""

    def __init__(
        self,
        leases: Leases,
        replica_id: str,
        url: str,
        lease_seconds: float,
        transcript: Transcript,
        forwarder: Forwarder,
    ) -> None:
        self.leases = leases
        self.id = replica_id
        self.url = url.rstrip("/")
        self.lease_seconds = lease_seconds
        self.transcript = transcript
        self.forwarder = forwarder
        self.signer = forwarder.signer
        # who ran a user a moment ago: one MongoDB read per second per user forwarded, not
        # per request (a dead owner is noticed by the connection, a move within the second
        # ends as a retryable 503 `session_elsewhere` at worst)
        self._owners: dict[tuple[str, str], tuple[Lease, float]] = {}

    def forwarded(self, request: HTTPServerRequest) -> bool:
        """Another replica forwarded `request` here: serve it here, never forward it on."""
        return self.signer.verify(request.headers.get(HEADER), request.method or "", request.path)

    async def owner(
        self, registry: SessionRegistry, request: HTTPServerRequest, tenant: str, user: str
    ) -> Lease | None:
        """Where to forward `request` for the user: the live replica that runs the user,
        unless that is this one or the request was forwarded here."""
        if registry.find(tenant, user) is not None or self.forwarded(request):
            return None
        key = (tenant, user)
        cached = self._owners.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        lease = await self.elsewhere(tenant, user)
        if lease is not None:
            now = time.monotonic()
            if len(self._owners) >= OWNERS_CACHED:
                self._owners = {k: v for k, v in self._owners.items() if v[1] > now}
            self._owners[key] = (lease, now + OWNER_CACHE_SECONDS)
        else:
            self._owners.pop(key, None)
        return lease

    async def elsewhere(self, tenant: str, user: str) -> Lease | None:
        """The lease of the live replica that runs the user, when that is not this one."""
        lease = await self.leases.holder(tenant, user)
        return lease if lease is not None and lease.owner != self.id else None

    async def running_elsewhere(self, tenant: str) -> set[str]:
        """The tenant's users whose kernels other live replicas run."""
        leases = await self.leases.holders(tenant)
        return {user for user, lease in leases.items() if lease.owner != self.id}

    async def after_expiry(self, lease: Lease, tenant: str, user: str) -> Lease | None:
        """`lease`'s owner did not answer: wait until the lease would have expired (the
        owner renews it if it lives), then who runs the user now; None: nobody, so this
        replica may take the user over."""
        self._owners.pop((tenant, user), None)
        for _ in range(EXPIRY_ROUNDS):
            await asyncio.sleep(max(0.0, lease.expires - time.time()) + 0.05)
            holder = await self.elsewhere(tenant, user)
            if holder is None or holder.owner != lease.owner or holder.expires <= lease.expires:
                return holder
            # The owner renewed the lease after it was looked up (the lookup is cached for
            # a second), perhaps just before it died: wait out the renewal too.
            lease = holder
        return lease

    async def is_orphan(self, tenant: str, user: str) -> bool:
        """No live replica runs the user (its running cells are a dead replica's)."""
        return await self.leases.holder(tenant, user) is None


class LeaseGate:
    """The registry's `SessionGate` on a replica: a kernel only with the user's lease."""

    def __init__(self, replicas: Replicas) -> None:
        self.replicas = replicas

    async def claim(self, tenant: str, user: str) -> None:
        r = self.replicas
        lease = await r.leases.claim(tenant, user, r.id, r.url, r.lease_seconds)
        if lease.owner != r.id:
            raise SessionElsewhere(f"replica {lease.owner!r} runs this session", lease.url)
        if lease.previous:
            log.info("took %s/%s over from replica %r", tenant, user, lease.previous)

        async def this_user(t: str, u: str) -> bool:
            return (t, u) == (tenant, user)

        # Cells still `running` now are a dead owner's (whether or not MongoDB's TTL monitor
        # has already removed its expired lease): recovered before the session resumes.
        await r.transcript.recover(this_user)

    async def release(self, tenant: str, user: str) -> None:
        r = self.replicas
        await r.leases.release(tenant, user, r.id)


class LeaseKeeper:
    """One owned task renewing this replica's leases, every third of their life."""

    def __init__(self, replicas: Replicas, registry: SessionRegistry) -> None:
        self.replicas = replicas
        self.registry = registry
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def renew(self) -> None:
        r = self.replicas
        lost = await r.leases.renew(self.registry.keys(), r.id, r.lease_seconds)
        for tenant, user in lost:
            lease = await r.leases.claim(tenant, user, r.id, r.url, r.lease_seconds)
            if lease.owner == r.id:
                continue  # it had expired and nobody took it: ours again
            log.warning(
                "replica %r took %s/%s over while this one could not renew: closing it here",
                lease.owner,
                tenant,
                user,
            )
            with contextlib.suppress(Exception):
                await self.registry.close(tenant, user)

    async def _loop(self) -> None:
        interval = self.replicas.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except StoreUnavailable as exc:
                log.warning("could not renew leases: %s", exc)
            except Exception:
                log.exception("renewing leases failed")


def unavailable(where: str) -> ProtocolError:
    return ProtocolError(503, "replica_unavailable", f"the replica at {where} does not answer")


async def session_or_pipe(
    handler: WebSocketHandler,
    replicas: Replicas | None,
    registry: SessionRegistry,
    tenant: str,
    user: str,
) -> KernelSession | SocketPipe:
    """For a WebSocket: the user's session here, or a pipe to the replica that runs it."""
    if replicas is None:
        return (await registry.ensure(tenant, user))[0]
    forwarder = replicas.forwarder
    lease = await replicas.owner(registry, handler.request, tenant, user)
    if lease is not None:
        try:
            return await SocketPipe.connect(handler, lease.url, forwarder)
        except OwnerUnreachable:  # dead, most likely: its lease runs out, then it is ours
            lease = await replicas.after_expiry(lease, tenant, user)
        if lease is not None:
            try:
                return await SocketPipe.connect(handler, lease.url, forwarder)
            except OwnerUnreachable:
                raise unavailable(lease.url) from None
    try:
        return (await registry.ensure(tenant, user))[0]
    except SessionElsewhere as exc:  # another replica took the user first
        if replicas.forwarded(handler.request):
            raise
        try:
            return await SocketPipe.connect(handler, exc.where, forwarder)
        except OwnerUnreachable:
            raise unavailable(exc.where) from None
