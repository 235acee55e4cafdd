"""`python -m bench`: run the suite, print the table, write bench/results/latest.json."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.config import BenchConfig
from bench.report import machine, table, write_json
from bench.runner import RunResult, run

log = logging.getLogger(__name__)


async def main_async(cfg: BenchConfig) -> RunResult:
    # SIGTERM cancels the run like Ctrl-C does, so every finally block stops what it started.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (as BENCH_QUICK=1)")
    parser.add_argument("--systems", help="comma list (as BENCH_SYSTEMS)")
    parser.add_argument("--scenarios", help="comma list, e.g. S1,S2 (as BENCH_SCENARIOS)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"
    if args.systems:
        os.environ["BENCH_SYSTEMS"] = args.systems
    if args.scenarios:
        os.environ["BENCH_SCENARIOS"] = args.scenarios
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cfg = BenchConfig.from_environ()
    started = datetime.now(UTC)
    before = machine()
    log.info("bench: systems %s, quick=%s, load %s", ",".join(cfg.systems), cfg.quick, before)
    try:
        result = asyncio.run(main_async(cfg))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.error("interrupted; every process the run started has been stopped")
        return 130
    print(table(result.metrics, result.settings))
    out = Path(cfg.out)
    write_json(out, result.metrics, result.settings, cfg.as_dict(), started, before)
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
