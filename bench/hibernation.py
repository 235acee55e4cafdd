"""S11: hibernation of a session holding a large DataFrame (issue: sessions that outlive their
kernel). Snapshot time and size, and the user's next first execution (a warm kernel claimed,
the DataFrame restored, `df.shape` run) against a warm session's execution. Measured by
bench/hibernate_load.py, run with the server's Python on the server's own session layer
(no HTTP, no sandbox: the edge is S2's business, the sandbox S7's).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from bench.clients.base import System
from bench.config import REPO, BenchConfig
from bench.procs import run_json
from bench.scenarios import row, scenario
from bench.stats import Metric

log = logging.getLogger(__name__)


async def measure(cfg: BenchConfig) -> dict[str, Any]:
    mb, n = (10, 2) if cfg.quick else (100, 3)
    argv = [cfg.server_python, str(REPO / "bench" / "hibernate_load.py"), "--mb", str(mb)]
    argv += ["--n", str(n), "--warm", str(max(5, cfg.s2_warmup))]
    env = {**os.environ, "PYTHONPATH": cfg.server_dir}
    result: dict[str, Any] = await run_json(argv, str(REPO), cfg.scenario_budget_s, env)
    return result


@scenario("S11", "hibernate")
async def hibernation(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """Snapshot and restore of a large DataFrame; first execution after restore vs warm."""
    if system.name != "ours":
        return []  # a server of ours, started by the measuring script itself
    data = await measure(cfg)
    mb, n = data["mb"], len(data["cull_ms"])
    save = row("S11", f"snapshot of a {mb} MB DataFrame (kernel's save)", system, "ms")
    save.samples = [s * 1000 for s in data["save_s"][:n]]
    save.note = "cloudpickle into the work dir, in the kernel"
    cull = row("S11", "cull with hibernation (save + kernel stop)", system, "ms")
    cull.samples = data["cull_ms"]
    size = row("S11", "snapshot size", system, "MB")
    size.samples = [b / 1e6 for b in data["bytes"]]
    size.note = f"DataFrame {data['df_bytes'] / 1e6:.0f} MB in memory"
    first = row("S11", "first execution after restore (claim + restore + run)", system, "ms")
    first.samples = data["first_ms"]
    own = row("S11", "  of which the execution itself", system, "ms")
    own.samples = data["first_own_ms"]
    warm = row("S11", "warm session execution (df.shape)", system, "ms")
    warm.samples = data["warm_ms"]
    after = row("S11", "second execution after restore", system, "ms")
    after.samples = data["after_ms"]
    if first.median and warm.median:
        first.note = f"{first.median / warm.median:.0f}x a warm session's"
    return [save, cull, size, first, own, warm, after]
