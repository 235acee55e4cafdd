"""S8: a new user's first analysis call, against the same call in a session that has run it.

The call a code interpreter actually gets first: import pandas, numpy and pyplot, build a
DataFrame, plot it, describe it. For a new user it is timed from "no session" (ours: a
WebSocket to a new session, claiming a warm spare; Kernel Gateway and the floor: a cold
kernel start) to its end; then the same call runs again in that session (the warm call).
Users arrive `BENCH_S1_GAP` s apart, so a warm pool can refill and preload between them.
Target: ours' first call at most 1.3x its warm call.
"""

from __future__ import annotations

import asyncio
import logging

from bench.clients.base import Stopwatch, System, describe
from bench.config import BenchConfig
from bench.scenarios import check, close_quietly, expired, row, scenario, user_name
from bench.stats import Metric

log = logging.getLogger(__name__)

TARGET = 1.3
ANALYSIS = (
    "import numpy as np\n"
    "import pandas as pd\n"
    "import matplotlib.pyplot as plt\n"
    "df = pd.DataFrame({'day': np.arange(365),"
    " 'sales': np.random.default_rng(7).normal(100, 15, 365).cumsum()})\n"
    "df['week'] = df['day'] // 7\n"
    "weekly = df.groupby('week')['sales'].mean()\n"
    "weekly.plot(title='weekly sales', figsize=(6, 4))\n"
    "plt.show()\n"
    "df.describe()\n"
)


@scenario("S8", "first analysis")
async def first_analysis(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """Each sample a new user: the analysis as their first call, then once more."""
    first = row("S8", "first analysis call (new user)", system, "ms")
    warm = row("S8", "same call, second time", system, "ms")
    for i in range(cfg.s8_n):
        if i and expired(deadline):
            break
        await asyncio.sleep(cfg.s1_gap_s)
        session = None
        try:
            async with asyncio.timeout(cfg.exec_timeout_s * 2):
                watch = Stopwatch()
                session = await system.open_session(user_name("s8"))
                res = await session.execute(ANALYSIS, cfg.exec_timeout_s)
                elapsed = watch.elapsed()
                problem = check(res, want_images=1)
                if not problem:
                    first.samples.append(elapsed * 1000)
                    again = await session.execute(ANALYSIS, cfg.exec_timeout_s)
                    problem = check(again, want_images=1)
                    if not problem:
                        warm.samples.append(again.elapsed_s * 1000)
        except Exception as exc:
            problem = describe(exc)
        finally:
            await close_quietly(session)
        if problem:
            first.errors += 1
            log.warning("S8 %s sample %d: %s", system.name, i, problem)
    if first.median is not None and warm.median:
        ratio = first.median / warm.median
        verdict = "meets" if ratio <= TARGET else "misses"
        first.note = f"{ratio:.2f}x the second call ({verdict} the {TARGET}x target)"
    return [first, warm]
