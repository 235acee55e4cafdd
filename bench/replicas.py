"""S12: the round trip through a replica that forwards to the owner, against the owner.

`ours-replicas` is two `python -m server --replica-id` processes sharing one data dir and
one MongoDB (`secantusd-py`). Users are created on replica A; then `x + 1` round trips go
to A directly and through B (which forwards: REST by proxying, WebSocket by piping frames),
alternated sample by sample, over the WebSocket and over REST. Target: through B at most
1.3x direct.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from bench.clients.base import Session, System
from bench.clients.ours import OursSystem, start_wire_server
from bench.config import BenchConfig
from bench.procs import ManagedProcess
from bench.scenarios import check, close_quietly, expired, row, scenario, user_name
from bench.stats import Metric

TARGET = 1.3


class ReplicasSystem:
    """Replicas A and B of our server on one MongoDB; sessions of A reached through either."""

    name = "ours-replicas"
    label = "ours (2 replicas)"

    def __init__(self, cfg: BenchConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir / self.name
        self.secret = secrets.token_hex(16)
        self.mongo: ManagedProcess | None = None
        self.replicas: dict[str, OursSystem] = {}

    def settings(self) -> dict[str, Any]:
        return {"replicas": 2, "store": "MongoDB (secantusd-py)", "sandbox": "off"}

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mongo, uri = await start_wire_server(self.cfg, self.workdir)
        for rid in ("a", "b"):
            server = OursSystem(self.cfg, self.workdir, f"replica-{rid}", f"replica {rid}", None)
            server.secret = self.secret  # one key for both, as behind a load balancer
            server.extra_args = [
                *server.extra_args,
                *("--data-dir", str(self.workdir / "shared-data")),
                *("--mongodb-uri", uri, "--replica-id", rid),
            ]
            self.replicas[rid] = server
            await server.start()  # the later --data-dir wins over OursSystem's own

    async def stop(self) -> None:
        for server in self.replicas.values():
            await server.stop()
        if self.mongo is not None:
            self.mongo.stop()

    async def open_session(self, user: str) -> Session:
        return await self.replicas["a"].open_session(user)

    def memory(self) -> tuple[int | None, list[int]]:
        return self.replicas["a"].memory()


async def _create_on_a(system: ReplicasSystem, user: str) -> None:
    await system.replicas["a"].request("PUT", f"/api/sessions/{user}")


@scenario("S12", "forwarding replica")
async def forwarding(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """`x + 1` on a session of replica A, sent to A and through B, alternately."""
    if not isinstance(system, ReplicasSystem):
        return []
    metrics = []
    for transport in ("ws", "rest"):
        direct = row("S12", f"round trip ({transport}), direct to the owner", system, "ms")
        through = row("S12", f"round trip ({transport}), through another replica", system, "ms")
        sessions: list[Session] = []
        try:
            for rid in ("a", "b"):
                user = user_name(f"s9{rid}")
                await _create_on_a(system, user)
                server = system.replicas[rid]
                server.transport = transport
                sessions.append(await server.open_session(user))
            for session in sessions:
                await session.execute("x = 1", cfg.exec_timeout_s)
            for i in range(cfg.s2_warmup + cfg.s2_n):
                if i and expired(deadline):
                    break
                for session, metric in zip(sessions, (direct, through), strict=True):
                    res = await session.execute("x + 1", cfg.exec_timeout_s)
                    if check(res, "2"):
                        metric.errors += 1
                    elif i >= cfg.s2_warmup:
                        metric.samples.append(res.elapsed_s * 1000)
        finally:
            for session in sessions:
                await close_quietly(session)
        if direct.median and through.median:
            through.note = f"{through.median / direct.median:.2f}x direct (target <= {TARGET}x)"
        metrics += [direct, through]
    return metrics
