"""S7: what the bubblewrap sandbox costs: S1 (warm pool and pool 0) and S2, on and off.

The same measurements run on our server with the sandbox on (`ours-sandbox`,
`ours-sandbox-pool0`) and off (`ours`, `ours-pool0`); `annotate` writes the on/off ratio
into the sandboxed rows' notes.
"""

from __future__ import annotations

from bench.clients.base import System
from bench.config import BenchConfig
from bench.scenarios import new_user, round_trip, scenario
from bench.stats import Metric

OFF_PEER = {"ours-sandbox": "ours", "ours-sandbox-pool0": "ours-pool0"}


def pool_label(system: System) -> str:
    pool = system.settings().get("pool_size")
    return "pool 0" if pool == 0 else f"warm pool {pool}"


@scenario("S7", "sandbox cost")
async def sandbox_cost(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """S1 on every system it runs on; S2 only where there is a warm pool (pool 0 adds nothing)."""
    sandbox = "on" if str(system.settings().get("sandbox", "")).startswith("on") else "off"
    pool = pool_label(system)
    metrics = await new_user(system, cfg, deadline)
    if pool != "pool 0":
        metrics += await round_trip(system, cfg, deadline, plain=False)
    for metric in metrics:
        kind = "new user" if metric.scenario == "S1" else "round trip"
        metric.scenario = "S7"
        metric.title = f"{kind} ({pool})" if kind == "new user" else kind
        metric.note = f"sandbox {sandbox}; {metric.note}".rstrip("; ")
    return metrics


def annotate(metrics: list[Metric]) -> None:
    """Append 'N.NNx sandbox off' to each sandboxed S7 row, from the unsandboxed twin."""
    by_key = {(m.title, m.system): m for m in metrics if m.scenario == "S7"}
    for (title, name), metric in by_key.items():
        base = by_key.get((title, OFF_PEER.get(name, "")))
        if base is None or metric.median is None or not base.median:
            continue
        metric.note += f"; {metric.median / base.median:.2f}x sandbox off"
