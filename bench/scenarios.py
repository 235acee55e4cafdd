"""The scenarios, as a registry: each takes a running system and returns table rows."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.clients.base import ExecResult, Session, Stopwatch, System, describe
from bench.clients.floor import FloorSystem
from bench.config import BenchConfig
from bench.stats import Metric

log = logging.getLogger(__name__)

MB = 1_000_000
Run = Callable[[System, BenchConfig, float], Awaitable[list[Metric]]]


@dataclass(frozen=True)
class Scenario:
    """A registered scenario; `run` is None while what it measures is not built."""

    id: str
    title: str
    run: Run | None
    reason: str = ""


SCENARIOS: dict[str, Scenario] = {}


def scenario(sid: str, title: str) -> Callable[[Run], Run]:
    def register(run: Run) -> Run:
        SCENARIOS[sid] = Scenario(sid, title, run)
        return run

    return register


def not_built(sid: str, title: str, reason: str = "n/a (not built yet)") -> None:
    SCENARIOS[sid] = Scenario(sid, title, None, reason)


def user_name(tag: str) -> str:
    return f"bench-{tag}-{uuid.uuid4().hex[:8]}"


def expired(deadline: float) -> bool:
    return time.monotonic() > deadline


async def close_quietly(session: Session | None) -> None:
    if session is None:
        return
    try:
        async with asyncio.timeout(30):
            await session.close()
    except Exception as exc:  # closing is cleanup; the system's stop() reaps what is left
        log.warning("closing a session failed: %r", exc)


def check(res: ExecResult, want_text: str | None = None, want_images: int = 0) -> str:
    """'' when the execution did what it should, else why not."""
    if not res.ok:
        return f"status={res.status} {res.error}".strip()
    if want_text is not None and res.text != want_text:
        return f"result {res.text!r} != {want_text!r}"
    if res.images < want_images:
        return f"{res.images} images < {want_images}"
    return ""


def row(sid: str, title: str, system: System, unit: str, **kw: object) -> Metric:
    return Metric(sid, title, system.name, system.label, unit, **kw)  # type: ignore[arg-type]


@scenario("S1", "new user")
async def new_user(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """From 'this user has no session' to the result of `1`, one new user at a time."""
    metric = row("S1", "new user", system, "ms")
    for i in range(cfg.s1_n):
        if i and expired(deadline):
            break
        await asyncio.sleep(cfg.s1_gap_s)  # lets a warm pool refill, as between real users
        session = None
        watch = Stopwatch()
        try:
            async with asyncio.timeout(cfg.exec_timeout_s):
                session = await system.open_session(user_name("s1"))
                res = await session.execute("1", cfg.exec_timeout_s)
            elapsed = watch.elapsed()
            problem = check(res, "1")
        except Exception as exc:
            problem = describe(exc)
        finally:
            await close_quietly(session)
        if problem:
            metric.errors += 1
            log.warning("S1 %s sample %d: %s", system.name, i, problem)
        else:
            metric.samples.append(elapsed * 1000)
    return [metric]


@scenario("S2", "round trip")
async def round_trip(
    system: System, cfg: BenchConfig, deadline: float, plain: bool = True
) -> list[Metric]:
    """`x = 1` once, then `x + 1` from send to done/idle, after a warm-up; where the system
    has one, a plain client (bench/clients/plain.py) on a second session, and a floor kernel
    of its own (`paired`), sample by sample alternated with the first, so all see the same
    machine: the floor's own row is measured minutes earlier or later, and this machine's
    speed drifts by more than the differences measured."""
    metric = row("S2", "round trip", system, "ms", note=f"warm-up {cfg.s2_warmup}")
    plain_metric = row("S2", "round trip, plain client", system, "ms")
    paired_metric = row("S2", "round trip, paired floor", system, "ms")
    paired_metric.label = f"ZMQ floor, paired with {system.label}"
    sessions: list[tuple[Session, Metric]] = []
    floor: FloorSystem | None = None
    try:
        sessions.append((await system.open_session(user_name("s2")), metric))
        open_plain = getattr(system, "open_plain_session", None) if plain else None
        if open_plain is not None:
            sessions.append((await open_plain(user_name("s2p")), plain_metric))
        if open_plain is not None and system.name != "floor":
            floor = FloorSystem(cfg, Path(tempfile.mkdtemp(prefix="kss-bench-s2-")))
            await floor.start()
            sessions.append((await floor.open_session(user_name("s2f")), paired_metric))
        for session, _ in sessions:
            problem = check(await session.execute("x = 1", cfg.exec_timeout_s))
            if problem:
                raise RuntimeError(f"setup: {problem}")
            for _ in range(cfg.s2_warmup):
                await session.execute("x + 1", cfg.exec_timeout_s)
        for _ in range(cfg.s2_n):
            if expired(deadline):
                break
            for session, m in sessions:
                res = await session.execute("x + 1", cfg.exec_timeout_s)
                if check(res, "2"):
                    m.errors += 1
                    log.warning("S2 %s: %s", system.name, check(res, "2"))
                else:
                    m.samples.append(res.elapsed_s * 1000)
        if len(sessions) > 1:
            plain = sessions[1][0]
            frames, size = getattr(plain, "frames", 0), getattr(plain, "frame_bytes", 0)
            what = "websockets + json.loads" if size else "jupyter_client execute_interactive"
            plain_metric.note = f"{what}; {frames} frames" + (f", {size} B" if size else "")
            plain_metric.note += " read per `x + 1`"
        if floor is not None and paired_metric.median:
            for m in (metric, plain_metric):
                if m.median:
                    m.note += f"; {m.median / paired_metric.median:.2f}x the paired floor"
            paired_metric.note = "a floor kernel of this run, alternated sample by sample"
    finally:
        for session, _ in sessions:
            await close_quietly(session)
        if floor is not None:
            await floor.stop()
            shutil.rmtree(floor.workdir.parent, ignore_errors=True)
    if len(sessions) == 1:
        return [metric]
    return [metric, plain_metric] + ([paired_metric] if floor is not None else [])


def stream_code(lines: int, line_bytes: int) -> str:
    return f"_line = 'x' * {line_bytes - 1}\nfor _ in range({lines}):\n    print(_line)\n"


@scenario("S3", "streaming")
async def streaming(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """`lines` prints of `line_bytes` bytes; MB/s of stdout the client received, and messages."""
    expected = cfg.s3_lines * cfg.s3_line_bytes
    size = f"{expected / MB:.0f} MB in {cfg.s3_lines} lines"
    rate = row("S3", "streaming", system, "MB/s", better="higher", note=size)
    count = row("S3", "stream messages", system, "msgs")
    session = await system.open_session(user_name("s3"))
    try:
        await session.execute("print('warm')", cfg.exec_timeout_s)
        code = stream_code(cfg.s3_lines, cfg.s3_line_bytes)
        for i in range(cfg.s3_n):
            if i and expired(deadline):
                break
            res = await session.execute(code, cfg.exec_timeout_s)
            if not res.ok:
                rate.errors += 1
                log.warning("S3 %s: %s", system.name, check(res))
                continue
            rate.samples.append(res.stdout_bytes / MB / res.elapsed_s)
            count.samples.append(float(res.messages))
            if res.stdout_bytes != expected:
                rate.note = f"{size}; client got {res.stdout_bytes / MB:.2f} MB"
    finally:
        await close_quietly(session)
    return [rate, count]


PLOT = (
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots(figsize=(6, 4))\n"
    "ax.plot(range(100), [i * i for i in range(100)])\n"
    "plt.show()\n"
)


@scenario("S4", "image")
async def image(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """A matplotlib figure to the client as image/png, on a warm kernel."""
    metric = row("S4", "image", system, "ms", note=f"warm-up {cfg.s4_warmup}")
    session = await system.open_session(user_name("s4"))
    try:
        for _ in range(max(1, cfg.s4_warmup)):
            problem = check(await session.execute(PLOT, cfg.exec_timeout_s), want_images=1)
            if problem:
                raise RuntimeError(f"warm-up: {problem}")
        for i in range(cfg.s4_n):
            if i and expired(deadline):
                break
            res = await session.execute(PLOT, cfg.exec_timeout_s)
            if check(res, want_images=1):
                metric.errors += 1
                log.warning("S4 %s: %s", system.name, check(res, want_images=1))
            else:
                metric.samples.append(res.elapsed_s * 1000)
                metric.note = f"warm-up {cfg.s4_warmup}; png {res.image_bytes / 1024:.0f} KiB b64"
    finally:
        await close_quietly(session)
    return [metric]
