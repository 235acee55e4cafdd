"""One benchmark run: each system in turn is started, put through its scenarios, stopped."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient

import bench.capacity  # registers S9
import bench.client_cost  # registers S10
import bench.concurrency  # registers S5
import bench.export  # registers S6
import bench.first_analysis  # registers S8
import bench.hibernation  # registers S11
import bench.metrics_cost  # registers S14
import bench.package_installs  # registers S13
import bench.replicas  # registers S12
import bench.sandbox_cost  # registers S7
from bench.clients.base import System
from bench.clients.floor import FloorSystem
from bench.clients.gateway import GatewaySystem
from bench.clients.ours import OursSystem
from bench.config import BenchConfig
from bench.replicas import ReplicasSystem
from bench.scenarios import SCENARIOS, Scenario
from bench.stats import Metric, failed, unavailable

log = logging.getLogger(__name__)

# Variants of ours that only answer the question they exist for; S6, S7, S10 are ours alone.
ONLY: dict[str, frozenset[str]] = {
    "ours-pool0": frozenset({"S1", "S7"}),
    "ours-rest": frozenset({"S1", "S2"}),
    "ours-sandbox": frozenset({"S7"}),
    "ours-sandbox-pool0": frozenset({"S7"}),
    "ours-mongo": frozenset({"S6"}),
    "ours-replicas": frozenset({"S12"}),
}
NOT: dict[str, frozenset[str]] = {
    "gateway": frozenset({"S6", "S7", "S10", "S11", "S12", "S13", "S14"}),
    "floor": frozenset({"S6", "S7", "S9", "S10", "S11", "S12", "S13", "S14"}),
}
SETTLE_S = 3.0  # after a start: the warm pool fills, start-up CPU dies down


def make_system(name: str, cfg: BenchConfig, workdir: Path) -> System:
    if name == "ours":
        return OursSystem(cfg, workdir, "ours", "ours", cfg.pool_size)
    if name == "ours-pool0":
        return OursSystem(cfg, workdir, "ours-pool0", "ours (pool 0)", 0)
    if name == "ours-rest":
        return OursSystem(cfg, workdir, "ours-rest", "ours REST", cfg.pool_size, "rest")
    if name == "ours-sandbox":
        return OursSystem(cfg, workdir, name, "ours sandboxed", cfg.pool_size, sandbox=True)
    if name == "ours-sandbox-pool0":
        return OursSystem(cfg, workdir, name, "ours sandboxed (pool 0)", 0, sandbox=True)
    if name == "ours-mongo":
        return OursSystem(cfg, workdir, name, "ours (MongoDB)", cfg.pool_size, mongo=True)
    if name == "ours-replicas":
        return ReplicasSystem(cfg, workdir)
    if name == "gateway":
        return GatewaySystem(cfg, workdir)
    if name == "floor":
        return FloorSystem(cfg, workdir)
    raise ValueError(f"unknown system {name!r}; expected one of ours, gateway, floor, ...")


@dataclass
class RunResult:
    metrics: list[Metric] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def scenario_order(sid: str) -> int:
    """S2 before S10."""
    return int(sid[1:])


def selected(cfg: BenchConfig) -> list[Scenario]:
    wanted = set(cfg.scenarios)
    ordered = sorted(SCENARIOS, key=scenario_order)
    return [SCENARIOS[sid] for sid in ordered if not wanted or sid in wanted]


async def run_system(
    system: System, scenarios: list[Scenario], cfg: BenchConfig, end: float
) -> list[Metric]:
    """Start `system`, run each scenario within its budget, always stop it."""
    metrics: list[Metric] = []
    try:
        async with asyncio.timeout(cfg.startup_timeout_s + 10):
            await system.start()
    except Exception as exc:
        log.error("%s did not start: %s", system.name, exc)
        await system.stop()
        reason = f"did not start: {str(exc).splitlines()[0] if str(exc) else repr(exc)}"
        return [failed(sc.id, sc.title, system.name, system.label, reason) for sc in scenarios]
    try:
        await asyncio.sleep(SETTLE_S)
        for sc in scenarios:
            assert sc.run is not None
            now = time.monotonic()
            if now > end:
                metrics.append(failed(sc.id, sc.title, system.name, system.label, "no time left"))
                continue
            deadline = min(now + cfg.scenario_budget_s, end)
            log.info("%s: %s %s", system.name, sc.id, sc.title)
            try:
                # The scenario stops looping at its deadline; this is the backstop.
                async with asyncio.timeout(deadline - now + cfg.exec_timeout_s + 30):
                    metrics += await sc.run(system, cfg, deadline)
            except Exception as exc:
                log.exception("%s %s failed", system.name, sc.id)
                metrics.append(failed(sc.id, sc.title, system.name, system.label, repr(exc)))
    finally:
        await system.stop()
    return metrics


async def run(cfg: BenchConfig) -> RunResult:
    """Every selected system through every scenario it takes, within the total budget."""
    AsyncHTTPClient.configure(None, max_clients=256)
    end = time.monotonic() + cfg.total_budget_s
    scenarios = selected(cfg)
    runnable = [sc for sc in scenarios if sc.run is not None]
    result = RunResult()
    workdir = Path(tempfile.mkdtemp(prefix="kss-bench-"))
    try:
        for name in cfg.systems:
            system = make_system(name, cfg, workdir)
            only = ONLY.get(name)
            skip = NOT.get(name, frozenset())
            mine = [sc for sc in runnable if (only is None or sc.id in only) and sc.id not in skip]
            if mine:
                result.metrics += await run_system(system, mine, cfg, end)
            result.settings[system.label] = system.settings()  # after start: what it ran with
    finally:
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            log.info("kept the run's logs and data in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result.metrics += [unavailable(sc.id, sc.title, sc.reason) for sc in scenarios if not sc.run]
    bench.sandbox_cost.annotate(result.metrics)
    order = {sid: i for i, sid in enumerate(sorted(SCENARIOS, key=scenario_order))}
    titles: dict[str, int] = {}
    for metric in result.metrics:
        titles.setdefault(metric.title, len(titles))
    systems = {name: i for i, name in enumerate(cfg.systems)}
    result.metrics.sort(
        key=lambda m: (order[m.scenario], titles[m.title], systems.get(m.system, 99))
    )
    return result
