"""S9: sessions per machine. What one session costs in memory, and how many stay fast.

`BENCH_S9_SESSIONS` users each import the data stack and build a 10 MB DataFrame, then sit
idle: each kernel's RSS, PSS and USS (from /proc/<pid>/smaps_rollup) and the server's RSS
growth per session are read. The idle capacity of this machine follows from them: its
memory, less the server and 1 GiB for the system, over what one idle session costs (kernel
PSS plus the server's share); it is computed, since starting hundreds of kernels would take
the whole run. Then an increasing number of those sessions turn active, each running a small
execution on its DataFrame back to back for `BENCH_S9_STEP` s, until the round trip's p95
passes 100 ms: the active capacity is the last count under it.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time

import psutil

from bench.clients.base import Session, System
from bench.config import BenchConfig
from bench.procs import kernel_pythons, memory_of
from bench.scenarios import check, close_quietly, row, scenario, user_name
from bench.stats import Metric, percentile

log = logging.getLogger(__name__)

MIB = 1024 * 1024
P95_LIMIT_MS = 100.0
SYSTEM_RESERVE = 1024 * MIB  # the OS, page cache, the benchmark itself
SETUP = (
    "import numpy as np\n"
    "import pandas as pd\n"
    "import matplotlib.pyplot as plt\n"
    "df = pd.DataFrame(np.random.default_rng(3).normal(size=(312_500, 4)), columns=list('abcd'))\n"
    "int(df.memory_usage().sum())\n"
)
STEP = "round(float(df['a'].sum()), 3)\n"


async def open_idle(system: System, cfg: BenchConfig, n: int) -> list[Session]:
    """`n` sessions with the data stack and a 10 MB DataFrame, a few started at a time."""
    sessions: list[Session] = []
    gate = asyncio.Semaphore(4)

    async def one(i: int) -> None:
        async with gate:
            session = await system.open_session(user_name(f"s9-{i}"))
            sessions.append(session)
            res = await session.execute(SETUP, cfg.exec_timeout_s)
            if check(res):
                raise RuntimeError(f"setup: {check(res)}")

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await asyncio.gather(*(close_quietly(s) for s in sessions))
        raise RuntimeError(f"{len(errors)} of {n} sessions failed: {errors[0]!r}")
    return sessions


async def load_step(sessions: list[Session], cfg: BenchConfig, seconds: float) -> list[float]:
    """Round trips (ms) of every session running STEP back to back for `seconds`."""
    end = time.monotonic() + seconds
    samples: list[float] = []

    async def loop(session: Session) -> None:
        while time.monotonic() < end:
            res = await session.execute(STEP, cfg.exec_timeout_s)
            if res.ok:
                samples.append(res.elapsed_s * 1000)

    await asyncio.gather(*(loop(s) for s in sessions))
    return samples


@scenario("S9", "sessions per machine")
async def capacity(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    server_pid = getattr(system, "server_pid", None)
    if server_pid is None:
        return []  # a server's sessions only
    n = cfg.s9_sessions
    before = memory_of(server_pid)["Rss"]
    sessions = await open_idle(system, cfg, n)
    try:
        await asyncio.sleep(2.0)  # replies settled, transcripts written
        server_after = memory_of(server_pid)["Rss"]
        kernels = [memory_of(p.pid) for p in kernel_pythons(server_pid)]
        kernels = [k for k in kernels if k]
        rows = []
        for key in ("Rss", "Pss", "USS"):
            metric = row("S9", f"idle session: kernel {key}", system, "MiB")
            metric.samples = [k[key] / MIB for k in kernels]
            metric.note = f"{len(kernels)} kernels (warm spares included), 10 MB DataFrame each"
            rows.append(metric)
        per_session = max(0.0, (server_after - before) / n)
        server_row = row("S9", "idle session: server memory", system, "MiB")
        server_row.samples = [per_session / MIB]
        server_row.note = f"server RSS {before / MIB:.0f} -> {server_after / MIB:.0f} MiB for {n}"
        pss = statistics.median(k["Pss"] for k in kernels)
        total = psutil.virtual_memory().total
        idle = int((total - server_after - SYSTEM_RESERVE) // (pss + per_session))
        idle_row = row(
            "S9", "idle sessions this machine holds", system, "sessions", better="higher"
        )
        idle_row.samples = [float(idle)]
        idle_row.note = (
            f"computed: ({total / 2**30:.0f} GiB - server - 1 GiB) / "
            f"(kernel PSS {pss / MIB:.0f} + server {per_session / MIB:.1f} MiB)"
        )
        # With every session idle, one active session's round trip.
        quiet = await load_step(sessions[:1], cfg, cfg.s9_step_s)
        active_row = row("S9", "active sessions with p95 < 100 ms", system, "sessions")
        active_row.better = "higher"
        steps = []
        best, rate = 0, 0.0
        for k in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64):
            if k > n or time.monotonic() > deadline:
                break
            samples = quiet if k == 1 else await load_step(sessions[:k], cfg, cfg.s9_step_s)
            if not samples:
                break
            p95 = percentile(samples, 95)
            steps.append(f"{k}: {p95:.0f}")
            if p95 >= P95_LIMIT_MS:
                break
            best, rate = k, len(samples) / cfg.s9_step_s
        active_row.samples = [float(best)]
        more = " (all of them; more sessions may fit)" if best == n else ""
        active_row.note = (
            f"back to back; p95 ms by active count {', '.join(steps)}{more}; "
            f"{rate:.0f} executions/s at {best}"
        )
        log.info("S9 %s: idle %d, active %d (%s)", system.name, idle, best, ", ".join(steps))
        return [*rows, server_row, idle_row, active_row]
    finally:
        await asyncio.gather(*(close_quietly(s) for s in sessions))
