"""S6: notebook export of a long session, and how fast the transcript store takes events."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Protocol

from bench.clients.base import Session, Stopwatch, System, describe
from bench.config import REPO, BenchConfig
from bench.procs import run_json
from bench.scenarios import MB, check, close_quietly, expired, row, scenario, user_name
from bench.stats import Metric

log = logging.getLogger(__name__)

BURST_LINES = 5000
BATCHES = (1, 50, 2000)  # 2000 is the transcript writer's largest batch
MONGO_SERVER = "secantusd-py (a MongoDB wire-protocol server in Python), not a mongod"


class Exporter(Protocol):
    async def notebook(self, user: str, timeout_s: float) -> bytes: ...


def plot_code(i: int) -> str:
    return (
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots(figsize=(6, 4))\n"
        f"ax.plot(range(100), [(x * {i}) % 97 for x in range(100)])\n"
        f"ax.set_title('cell {i}')\n"
        "plt.show()\n"
    )


def plain_code(i: int) -> str:
    return f"v{i} = {i} * 2\nprint('cell', {i}, v{i})\nv{i}\n"


async def build(session: Session, cfg: BenchConfig, deadline: float) -> tuple[int, int, int]:
    """Run `s6_cells` cells, every (cells / images)-th a plot; (cells ok, images, errors)."""
    every = max(1, cfg.s6_cells // max(1, cfg.s6_images))
    done = images = errors = 0
    for i in range(cfg.s6_cells):
        if expired(deadline):
            break
        plot = i % every == 0 and images < cfg.s6_images
        res = await session.execute(plot_code(i) if plot else plain_code(i), cfg.exec_timeout_s)
        problem = check(res, None, 1 if plot else 0)
        if problem:
            errors += 1
            if errors <= 3:
                log.warning("S6 cell %d: %s", i, problem)
            continue
        done += 1
        images += 1 if plot else 0
    return done, images, errors


def count_notebook(body: bytes) -> tuple[int, int]:
    """(code cells, image/png outputs) of an exported notebook."""
    nb = json.loads(body)
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    pngs = sum(1 for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    return len(cells), pngs


async def export_rows(
    system: System, exporter: Exporter, cfg: BenchConfig, deadline: float
) -> list[Metric]:
    shape = f"{cfg.s6_cells} cells, {cfg.s6_images} images"
    building = row("S6", "build session (WebSocket)", system, "s", note=shape)
    export = row("S6", "GET notebook", system, "ms")
    user = user_name("s6")
    session = await system.open_session(user)
    try:
        watch = Stopwatch()
        done, images, errors = await build(session, cfg, deadline)
        building.samples.append(watch.elapsed())
        building.errors = errors
        building.note = f"{shape}; {done} ran, {images} images"
        size = 0
        for i in range(cfg.s6_n):
            if i and expired(deadline):
                break
            watch = Stopwatch()
            try:
                body = await exporter.notebook(user, cfg.exec_timeout_s)
            except Exception as exc:
                export.errors += 1
                log.warning("S6 export: %s", describe(exc))
                continue
            export.samples.append(watch.elapsed() * 1000)
            size = len(body)
            cells, pngs = count_notebook(body)
            if cells < done or pngs < images:
                export.errors += 1
                log.warning(
                    "S6 notebook has %d cells, %d png; want %d, %d", cells, pngs, done, images
                )
        export.note = f"notebook {size / MB:.2f} MB, {shape}"
        burst = await burst_row(system, exporter, session, user, cfg, deadline)
    finally:
        await close_quietly(session)
    return [building, export, burst]


async def burst_row(
    system: System,
    exporter: Exporter,
    session: Session,
    user: str,
    cfg: BenchConfig,
    deadline: float,
) -> Metric:
    """From `done` of a cell printing BURST_LINES flushed lines to an export that has them."""
    lag = row("S6", f"export after a {BURST_LINES}-event burst", system, "ms")
    note = "from the burst's done to GET notebook returning (it flushes the writer first)"
    code = f"for _i in range({BURST_LINES}):\n    print('burst', _i, flush=True)\n"
    for _ in range(max(1, min(3, cfg.s6_n))):
        if expired(deadline):
            break
        res = await session.execute(code, cfg.exec_timeout_s)
        if not res.ok:
            lag.errors += 1
            continue
        watch = Stopwatch()
        await exporter.notebook(user, cfg.exec_timeout_s)
        lag.samples.append(watch.elapsed() * 1000)
        lag.note = f"{res.messages} events reached the client; {note}"
    return lag


async def store_rows(system: System, cfg: BenchConfig) -> list[Metric]:
    """`append_events` of the system's store (SQLite, or MongoDB for `ours-mongo`) driven
    in-process by bench/store_load.py (server's Python)."""
    uri = getattr(system, "mongodb_uri", "")
    backend = "MongoDB" if uri else "SQLite"
    rows = {
        b: row("S6", f"{backend} append_events, batch {b}", system, "events/s") for b in BATCHES
    }
    for metric in rows.values():
        metric.better = "higher"
        metric.note = "in-process, ~190 B stream events"
    big = row("S6", f"{backend} append_events, 1 MB events", system, "MB/s", better="higher")
    big.note = "in-process, S3-sized coalesced stream events"
    argv = [
        cfg.server_python,
        str(REPO / "bench" / "store_load.py"),
        "--events",
        str(cfg.s6_store_events),
        "--batches",
        ",".join(map(str, BATCHES)),
    ]
    if uri:  # a fifth of the events: the Python wire-protocol server takes them slowly
        argv[argv.index("--events") + 1] = str(max(1000, cfg.s6_store_events // 5))
        argv += ["--mongodb-uri", uri]
        for metric in [*rows.values(), big]:
            metric.note += f"; {MONGO_SERVER}"
    env = {**os.environ, "PYTHONPATH": cfg.server_dir}
    result: dict[str, Any] = await run_json(argv, cfg.server_dir, cfg.scenario_budget_s, env)
    for batch, metric in rows.items():
        metric.samples = list(result["small"][str(batch)])
    big.samples = list(result["big"]["mb_per_s"])
    return [*rows.values(), big]


@scenario("S6", "export")
async def export(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """1,000 cells (100 plots) over the WebSocket, then GET .../notebook; store throughput."""
    if not hasattr(system, "notebook"):
        return []  # only our server exports notebooks
    started = time.monotonic()
    metrics = await export_rows(system, system, cfg, deadline)  # type: ignore[arg-type]
    log.info("S6 %s: export rows in %.0f s", system.name, time.monotonic() - started)
    try:
        metrics += await store_rows(system, cfg)
    except Exception as exc:
        log.exception("S6 store load failed")
        metrics.append(row("S6", "append_events", system, "-", note=f"failed: {exc!r}"))
    return metrics
