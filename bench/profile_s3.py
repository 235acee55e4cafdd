"""Where S3's time goes: CPU per process, and py-spy profiles of the server and the client.

    .bench-venv/bin/python -m bench.profile_s3 [--system ours|gateway] [--runs 2]

Starts the system as the suite does, runs S3 once without a profiler to read the CPU each
process spent (server, kernels, this client) against the wall time, then `--runs` more
with `py-spy record` attached to the server and to this client process, and prints the
top functions by own time and by inclusive time, and each thread's share.
Raw profiles stay in `--out` (bench/results/profiles/, gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil

from bench.clients.base import Session, Stopwatch, System
from bench.config import REPO, BenchConfig
from bench.procs import kernel_procs
from bench.runner import SETTLE_S, make_system
from bench.scenarios import MB, stream_code, user_name

log = logging.getLogger(__name__)

PY_SPY = Path(sys.executable).parent / "py-spy"
LINE_NO = re.compile(r":\d+\)$")


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def server_proc(system: System) -> psutil.Process | None:
    pid = getattr(system, "server_pid", None)
    proc = getattr(system, "proc", None)
    pid = pid if pid is not None else getattr(proc, "pid", None)
    return psutil.Process(pid) if pid else None


async def one_run(system: System, session: Session, cfg: BenchConfig) -> dict[str, float]:
    """One S3 execution; MB/s and the CPU seconds each side spent during it."""
    server = server_proc(system)
    kernels = kernel_procs(server.pid) if server else []
    me = psutil.Process()
    before = [cpu_seconds([server] if server else []), cpu_seconds(kernels), cpu_seconds([me])]
    watch = Stopwatch()
    res = await session.execute(stream_code(cfg.s3_lines, cfg.s3_line_bytes), cfg.exec_timeout_s)
    wall = watch.elapsed()
    after = [cpu_seconds([server] if server else []), cpu_seconds(kernels), cpu_seconds([me])]
    used = [a - b for a, b in zip(after, before, strict=True)]
    return {
        "mb_s": res.stdout_bytes / MB / wall,
        "wall_s": wall,
        "server_cpu_s": used[0],
        "kernel_cpu_s": used[1],
        "client_cpu_s": used[2],
        "messages": float(res.messages),
    }


def start_spy(pid: int, out: Path, rate: int, gil: bool) -> subprocess.Popen[bytes]:
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    argv += ["--threads", "--nonblocking", "-o", str(out)]
    if gil:  # only the thread holding the GIL: who keeps the event loop from running
        argv.append("--gil")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_spy(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summarize(path: Path, top: int) -> str:
    """Own time and inclusive time per function, and samples per thread, from a raw profile."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        total += count
        threads[thread] += count
        names = [LINE_NO.sub(")", frame) for frame in frames]
        if names:
            own[names[-1]] += count
        for name in set(names):
            incl[name] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples"]
    lines += [f"  thread {share(n, total)}  {name}" for name, n in threads.most_common(6)]
    lines.append("  own time:")
    lines += [f"    {share(n, total)}  {name}" for name, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {share(n, total)}  {name}" for name, n in incl.most_common(top)]
    return "\n".join(lines)


def share(n: int, total: int) -> str:
    return f"{100 * n / total:5.1f}%"


def fmt_run(tag: str, run: dict[str, float]) -> str:
    wall = run["wall_s"]
    cores = " ".join(
        f"{side} {run[f'{side}_cpu_s']:.2f}s ({run[f'{side}_cpu_s'] / wall:.0%})"
        for side in ("server", "kernel", "client")
    )
    return f"{tag}: {run['mb_s']:.1f} MB/s in {wall:.2f} s, {run['messages']:.0f} msgs; cpu {cores}"


async def profile(args: argparse.Namespace, cfg: BenchConfig) -> None:
    out = Path(args.out)
    workdir = Path(tempfile.mkdtemp(prefix="kss-profile-"))
    system = make_system(args.system, cfg, workdir)
    spies: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        await system.start()
        await asyncio.sleep(SETTLE_S)
        session = await system.open_session(user_name("prof"))
        await session.execute("print('warm')", cfg.exec_timeout_s)
        for i in range(args.plain):
            print(fmt_run(f"no profiler {i + 1}", await one_run(system, session, cfg)))
        server = server_proc(system)
        targets = {"client": os.getpid()} | ({"server": server.pid} if server else {})
        for side, pid in targets.items():
            path = out / f"s3-{args.system}-{side}{'-gil' if args.gil else ''}.raw.txt"
            spies.append((start_spy(pid, path, args.rate, args.gil), path))
        await asyncio.sleep(1.0)  # py-spy attaches
        for i in range(args.runs):
            print(fmt_run(f"py-spy {i + 1}", await one_run(system, session, cfg)))
        for proc, _ in spies:
            stop_spy(proc)
        for _, path in spies:
            print(summarize(path, args.top) if path.exists() else f"{path}: not written")
        await session.close()
    finally:
        for proc, _ in spies:
            if proc.poll() is None:
                proc.kill()
        await system.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_s3", description=__doc__)
    parser.add_argument("--system", default="ours", help="ours, gateway, floor, ...")
    parser.add_argument("--runs", type=int, default=2, help="S3 executions under py-spy")
    parser.add_argument("--plain", type=int, default=2, help="S3 executions without it")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gil", action="store_true", help="sample only the GIL holder")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "profiles"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    asyncio.run(profile(args, BenchConfig.from_environ()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
