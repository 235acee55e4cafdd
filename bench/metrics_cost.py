"""S14: what the metrics cost a user's round trip.

The counters and histograms behind `/metrics` are always kept (an increment or a bucket per
event), so the question is what a scrape does to the users' executions: the S2 round trip
(`x + 1` on a WebSocket) in blocks of `BLOCK` samples, alternately with nobody scraping and
with a scraper fetching `/metrics` every `BENCH_S14_INTERVAL` s, so both see the same
machine. The interval (0.1 s) is 150 times as often as Prometheus' default of 15 s, so that
scrapes overlap enough round trips to show in the median and p95 if they cost anything.
Target: the difference within noise. The scrapes' own duration and size are in the note.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics

from bench.clients.base import Stopwatch, System
from bench.config import BenchConfig
from bench.scenarios import check, close_quietly, expired, row, scenario, user_name
from bench.stats import Metric

log = logging.getLogger(__name__)

BLOCK = 50


async def scrape_forever(
    system: System, interval: float, took: list[float], size: list[int]
) -> None:
    while True:
        watch = Stopwatch()
        try:
            body = await system.scrape(10.0)  # type: ignore[attr-defined]
        except Exception as exc:
            log.warning("S14 scrape failed: %r", exc)
        else:
            took.append(watch.elapsed() * 1000)
            size.append(len(body))
        await asyncio.sleep(interval)


@scenario("S14", "metrics cost")
async def metrics_cost(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    if not hasattr(system, "scrape"):
        return []
    quiet = row("S14", "round trip, no scraper", system, "ms")
    scraped = row("S14", "round trip, /metrics scraped", system, "ms")
    took: list[float] = []
    size: list[int] = []
    session = None
    try:
        session = await system.open_session(user_name("s14"))
        problem = check(await session.execute("x = 1", cfg.exec_timeout_s))
        if problem:
            raise RuntimeError(f"setup: {problem}")
        for _ in range(cfg.s2_warmup):
            await session.execute("x + 1", cfg.exec_timeout_s)
        block = 0
        while min(len(quiet.samples), len(scraped.samples)) < cfg.s2_n and not expired(deadline):
            metric = scraped if block % 2 else quiet
            scraper = None
            if metric is scraped:
                scraper = asyncio.create_task(
                    scrape_forever(system, cfg.s14_interval_s, took, size)
                )
            try:
                for _ in range(BLOCK):
                    res = await session.execute("x + 1", cfg.exec_timeout_s)
                    if check(res, "2"):
                        metric.errors += 1
                        log.warning("S14 %s: %s", system.name, check(res, "2"))
                    else:
                        metric.samples.append(res.elapsed_s * 1000)
            finally:
                if scraper is not None:
                    scraper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await scraper
            block += 1
    finally:
        await close_quietly(session)
    quiet.note = f"blocks of {BLOCK}, alternated"
    if quiet.median and scraped.median:
        ratio = scraped.median / quiet.median
        scraped.note = f"{ratio:.2f}x no scraper; every {cfg.s14_interval_s:g} s"
        if took:
            scraped.note += (
                f", {len(took)} scrapes of {statistics.median(size) / 1000:.0f} kB,"
                f" {statistics.median(took):.1f} ms each"
            )
    return [quiet, scraped]
