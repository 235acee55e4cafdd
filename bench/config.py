"""The benchmark's settings: counts, time bounds and paths, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ALL_SYSTEMS = (
    "ours",
    "ours-pool0",
    "ours-rest",
    "ours-mongo",
    "ours-replicas",
    "gateway",
    "floor",
    "ours-sandbox",
    "ours-sandbox-pool0",
)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(env.get(name, default))


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return float(env.get(name, default))


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class BenchConfig:
    """Every count and bound of one run. `BENCH_QUICK=1` shrinks the counts for a smoke run."""

    quick: bool
    systems: tuple[str, ...]
    scenarios: tuple[str, ...]
    s1_n: int
    s1_gap_s: float
    s2_n: int
    s2_warmup: int
    s3_n: int
    s3_lines: int
    s3_line_bytes: int
    s4_n: int
    s4_warmup: int
    s5_users: int
    s5_execs: int
    s6_cells: int
    s6_images: int
    s6_n: int
    s6_store_events: int
    s8_n: int
    s9_sessions: int
    s9_step_s: float
    s13_n: int
    s14_interval_s: float
    exec_timeout_s: float
    scenario_budget_s: float
    total_budget_s: float
    startup_timeout_s: float
    pool_size: int | None
    server_python: str
    server_dir: str
    kernel_python: str
    out: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> BenchConfig:
        env = os.environ if environ is None else environ
        quick = env.get("BENCH_QUICK", "") not in ("", "0")
        pool = env.get("BENCH_POOL_SIZE", "")
        return cls(
            quick=quick,
            systems=_list(env, "BENCH_SYSTEMS") or ALL_SYSTEMS,
            scenarios=_list(env, "BENCH_SCENARIOS"),
            s1_n=_int(env, "BENCH_S1_N", 3 if quick else 10),
            # Time between new users, so a warm pool can refill as it would between real users.
            s1_gap_s=_float(env, "BENCH_S1_GAP", 1.0 if quick else 2.0),
            s2_n=_int(env, "BENCH_S2_N", 30 if quick else 200),
            s2_warmup=_int(env, "BENCH_S2_WARMUP", 5 if quick else 20),
            s3_n=_int(env, "BENCH_S3_N", 1 if quick else 3),
            s3_lines=_int(env, "BENCH_S3_LINES", 200_000),
            s3_line_bytes=_int(env, "BENCH_S3_LINE_BYTES", 100),
            s4_n=_int(env, "BENCH_S4_N", 3 if quick else 10),
            s4_warmup=_int(env, "BENCH_S4_WARMUP", 2),
            s5_users=_int(env, "BENCH_S5_USERS", 5 if quick else 20),
            s5_execs=_int(env, "BENCH_S5_EXECS", 5 if quick else 20),
            s6_cells=_int(env, "BENCH_S6_CELLS", 100 if quick else 1000),
            s6_images=_int(env, "BENCH_S6_IMAGES", 10 if quick else 100),
            s6_n=_int(env, "BENCH_S6_N", 3 if quick else 10),
            s6_store_events=_int(env, "BENCH_S6_STORE_EVENTS", 20_000 if quick else 100_000),
            s8_n=_int(env, "BENCH_S8_N", 3 if quick else 8),
            s9_sessions=_int(env, "BENCH_S9_SESSIONS", 6 if quick else 32),
            s9_step_s=_float(env, "BENCH_S9_STEP", 3.0 if quick else 6.0),
            s13_n=_int(env, "BENCH_S13_N", 3 if quick else 8),
            s14_interval_s=_float(env, "BENCH_S14_INTERVAL", 0.1),
            exec_timeout_s=_float(env, "BENCH_EXEC_TIMEOUT", 120.0),
            scenario_budget_s=_float(env, "BENCH_SCENARIO_BUDGET", 60.0 if quick else 180.0),
            total_budget_s=_float(env, "BENCH_TOTAL_BUDGET", 1500.0),
            startup_timeout_s=_float(env, "BENCH_STARTUP_TIMEOUT", 90.0),
            pool_size=int(pool) if pool else None,
            server_python=env.get("BENCH_SERVER_PYTHON", str(REPO / ".venv" / "bin" / "python")),
            # Where `python -m server` runs from: a checkout other than this one, e.g. a
            # snapshot of a commit while the work tree is mid-edit.
            server_dir=env.get("BENCH_SERVER_DIR", str(REPO)),
            kernel_python=env.get(
                "BENCH_KERNEL_PYTHON", str(REPO / ".kernel-venv" / "bin" / "python")
            ),
            out=env.get("BENCH_OUT", str(REPO / "bench" / "results" / "latest.json")),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
