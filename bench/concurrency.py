"""S5: many users at once; latency, errors and the memory an idle kernel costs."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time

from bench.clients.base import Session, Stopwatch, System, describe
from bench.config import BenchConfig
from bench.scenarios import check, close_quietly, expired, row, scenario, user_name
from bench.stats import Metric

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class UserRun:
    """One simulated user of S5: its session, latencies and failures."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.ready_ms: float | None = None
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []


async def one_user(
    system: System, cfg: BenchConfig, deadline: float, user: UserRun, index: int
) -> None:
    """Create the session, run `1` (kernel start lands here), then the small executions."""
    watch = Stopwatch()
    try:
        user.session = await system.open_session(user_name(f"s5-{index}"))
        problem = check(await user.session.execute("1", cfg.exec_timeout_s), "1")
        if problem:
            user.errors.append(f"first execute: {problem}")
            return
        user.ready_ms = watch.elapsed() * 1000
        for j in range(cfg.s5_execs):
            if expired(deadline):
                user.errors.append("scenario deadline")
                return
            res = await user.session.execute(f"sum(range({j} * 100))", cfg.exec_timeout_s)
            problem = check(res, str(sum(range(j * 100))))
            if problem:
                user.errors.append(problem)
            else:
                user.latencies_ms.append(res.elapsed_s * 1000)
    except Exception as exc:
        user.errors.append(describe(exc))


@scenario("S5", "concurrency")
async def concurrency(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """`s5_users` users created at once, each running `s5_execs` small executions in turn."""
    shape = f"{cfg.s5_users} users x {cfg.s5_execs} executions"
    wall = row("S5", "wall time", system, "s", note=shape)
    ready = row("S5", "user ready (create + `1`)", system, "ms")
    execute = row("S5", "execute", system, "ms")
    errors = row("S5", "errors", system, "count")
    kernel_rss = row("S5", "RSS per idle kernel", system, "MiB")
    server_rss = row("S5", "server RSS", system, "MiB")
    users = [UserRun() for _ in range(cfg.s5_users)]
    watch = Stopwatch()
    try:
        async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
            await asyncio.gather(
                *(one_user(system, cfg, deadline, user, i) for i, user in enumerate(users))
            )
    except TimeoutError:
        errors.note = "hit the scenario deadline"
    wall.samples.append(watch.elapsed())
    await asyncio.sleep(1.0)  # let the last replies settle before reading memory
    server, kernels = system.memory()
    for user in users:
        if user.ready_ms is not None:
            ready.samples.append(user.ready_ms)
        execute.samples += user.latencies_ms
        for problem in user.errors[:3]:
            log.warning("S5 %s: %s", system.name, problem)
    errors.samples.append(float(sum(len(user.errors) for user in users)))
    kernel_rss.samples = [rss / MIB for rss in kernels]
    kernel_rss.note = f"{len(kernels)} kernels alive"
    if server is None:
        server_rss.note = "no server process"
    else:
        server_rss.samples.append(server / MIB)
    if kernels:
        log.info(
            "S5 %s: %d kernels, median RSS %.0f MiB",
            system.name,
            len(kernels),
            statistics.median(kernel_rss.samples),
        )
    await asyncio.gather(*(close_quietly(user.session) for user in users))
    return [wall, ready, execute, errors, kernel_rss, server_rss]
