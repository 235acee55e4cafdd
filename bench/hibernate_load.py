"""S11's measurements, run with the server's Python (it drives the server's own session layer).

One session holding a DataFrame of `--mb` MB (float64 columns) on a real server set-up (the
lifespan of `server/app.py`, no sandbox, no HTTP: what is measured is hibernation, not the
edge). Warm executions of `df.shape` first; then, `--n` times: cull the idle session (its
kernel saves the DataFrame), and run `df.shape` in the user's next session (a warm kernel
is claimed, the DataFrame restored, the code run), then once more. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from files.area import HIBERNATION_DIR
from server.app import lifespan
from server.config import Settings, finalize, with_options

MAKE = (
    "import numpy as np, pandas as pd\n"
    "df = pd.DataFrame(np.random.default_rng(0).random(({rows}, 8)), "
    "columns=[f'c{{i}}' for i in range(8)])\n"
    "df.memory_usage(deep=True).sum()"
)


class SaveTimes(logging.Handler):
    """The kernel's own save time, from the session's log line about it."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "hibernated" in str(record.msg) and isinstance(record.args, tuple):
            self.seconds.append(float(record.args[5]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def main(mb: int, n: int, warm_n: int) -> dict[str, Any]:
    saves = SaveTimes()
    logging.getLogger("kernels.session").addHandler(saves)
    logging.getLogger("kernels.session").setLevel(logging.INFO)
    data = Path(tempfile.mkdtemp(prefix="kss-bench-s11-"))
    settings = finalize(
        with_options(
            Settings(),
            {
                "port": free_port(),
                "data_dir": data,
                "api_keys": (("bench", "bench-key-s11"),),
                "pool_size": 1,
                "sandbox": "off",
                "janitor_interval": 3600,
                "user_quota_bytes": 4 * mb * 1_000_000 + 100_000_000,
                "hibernate_max_bytes": 2 * mb * 1_000_000 + 50_000_000,
                "hibernate_timeout": 120,
                "exec_timeout": 120,
            },
        )
    )
    out: dict[str, Any] = {"mb": mb, "warm_ms": [], "cull_ms": [], "save_s": [], "bytes": []}
    out.update({"first_ms": [], "first_own_ms": [], "after_ms": []})
    async with lifespan(settings) as state:
        registry = state.registry
        await state.pool.wait_warm()
        session, _ = await registry.ensure("bench", "u")
        rows = mb * 1_000_000 // 64
        made = await session.submit(MAKE.format(rows=rows)).done
        assert made.status == "ok", made.summary()["error"]
        out["df_bytes"] = int(made.collector.result["text/plain"].split("(")[-1].strip(")"))
        for _ in range(warm_n):
            t0 = time.perf_counter()
            cell = await session.submit("df.shape").done
            out["warm_ms"].append((time.perf_counter() - t0) * 1000)
        snapshot = state.files.work_dir("bench", "u") / HIBERNATION_DIR
        for _ in range(n):
            await state.pool.wait_warm()
            t0 = time.perf_counter()
            await registry.cull_idle(0, now=time.time() + 10)
            out["cull_ms"].append((time.perf_counter() - t0) * 1000)
            out["bytes"].append(tree_bytes(snapshot))
            await state.pool.wait_warm()
            session, _ = await registry.ensure("bench", "u")
            t0 = time.perf_counter()
            cell = await session.submit("df.shape").done
            out["first_ms"].append((time.perf_counter() - t0) * 1000)
            out["first_own_ms"].append(cell.duration_ms)
            assert cell.restore is not None and "df" in cell.restore.restored, cell.restore
            t0 = time.perf_counter()
            await session.submit("df.shape").done
            out["after_ms"].append((time.perf_counter() - t0) * 1000)
        out["save_s"] = saves.seconds
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--warm", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.mb, args.n, args.warm))))
