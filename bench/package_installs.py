"""S13: package installs. `%pip install` of a package and its import, in one execution: of a
package the server has never installed (from its package index into its package cache), of
one its cache already has (another user installed it: only pip's resolve and the mount are
left), and of a package with one dependency; against a warm `x + 1` in the same session.

The bench must not depend on the network, so the index is local: wheels this scenario
builds (with the tests' `tests/packages/wheels.py`) into a directory, passed as
`--package-index DIR` (pip `--no-index --find-links DIR`), with an allowlist naming them.
That takes a server of its own, started here like `ours` (sandbox off, the same pool) with
those two flags, beside the runner's: every sample installs names new to it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bench.clients.base import Session, System
from bench.clients.ours import OursSystem
from bench.config import BenchConfig
from bench.scenarios import check, close_quietly, expired, row, scenario, user_name
from bench.stats import Metric
from tests.packages.wheels import make_wheel

log = logging.getLogger(__name__)

VERSION = "1.0"
SETTLE_S = 3.0  # after the warm-up: the pool refills the two spares the users claimed


def install_code(package: str, *modules: str) -> str:
    """One execution: install `package`, import `modules`, give the last one's VERSION."""
    return f"%pip install {package}\nimport {', '.join(modules)}\n{modules[-1]}.VERSION"


async def measure(
    session: Session, code: str, want: dict[str, str], metric: Metric, cfg: BenchConfig
) -> None:
    """Run `code`; its time goes to `metric` if it gave VERSION (or 2 for the warm call) and
    the server reported the packages in the states `want` (installed, cached)."""
    res = await session.execute(code, cfg.exec_timeout_s)
    problem = check(res, f"'{VERSION}'" if want else "2")
    if not problem and res.packages != want:
        problem = f"packages {res.packages} != {want}"
    if problem:
        metric.errors += 1
        log.warning("S13 %s: %s", metric.title, problem)
    else:
        metric.samples.append(res.elapsed_s * 1000)


def build_index(directory: Path, n: int) -> list[str]:
    """Wheels for `n` samples and a warm-up; the allowlist's names."""
    names = []
    for tag in ["warm", *map(str, range(n))]:
        make_wheel(directory, f"benchpkg{tag}", VERSION)
        make_wheel(directory, f"benchtop{tag}", VERSION, requires=(f"benchdep{tag}",))
        make_wheel(directory, f"benchdep{tag}", VERSION)
        names += [f"benchpkg{tag}", f"benchtop{tag}"]
    return names


@scenario("S13", "package installs")
async def package_installs(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """Per sample: user A installs a new package, user B the same one (cached), A a new one
    with a dependency, A a warm call; alternated so all four see the same machine."""
    if not isinstance(system, OursSystem):
        return []
    uncached = row("S13", "%pip install + import, uncached (local index)", system, "ms")
    cached = row("S13", "%pip install + import, cached (other user)", system, "ms")
    with_dep = row("S13", "%pip install + import, uncached, 1 dependency", system, "ms")
    warm = row("S13", "warm call (x + 1) in the same session", system, "ms")
    home = system.workdir.parent / "ours-packages"
    index, allow = home / "wheels", home / "allowlist.txt"
    names = await asyncio.to_thread(build_index, index, cfg.s13_n)
    allow.write_text("\n".join(names) + "\n")
    args = ("--package-index", str(index), "--package-allowlist", str(allow))
    server = OursSystem(
        cfg, home.parent, home.name, "ours (package index)", system.pool_size, args=args
    )
    sessions: list[Session] = []
    try:
        await server.start()
        for tag in ("s13a", "s13b"):
            sessions.append(await server.open_session(user_name(tag)))
        a, b = sessions
        # A first pip run pays for a cold page cache: a warm-up, not a sample.
        warm_up = install_code("benchpkgwarm", "benchpkgwarm")
        for session in sessions:
            for code, want in (("x = 1", None), (warm_up, f"'{VERSION}'")):
                problem = check(await session.execute(code, cfg.exec_timeout_s), want)
                if problem:
                    raise RuntimeError(f"warm-up: {problem}")
        await asyncio.sleep(SETTLE_S)
        for i in range(cfg.s13_n):
            if i and expired(deadline):
                break
            pkg, top, dep = f"benchpkg{i}", f"benchtop{i}", f"benchdep{i}"
            await measure(a, install_code(pkg, pkg), {pkg: "installed"}, uncached, cfg)
            await measure(b, install_code(pkg, pkg), {pkg: "cached"}, cached, cfg)
            want = {top: "installed", dep: "installed"}
            await measure(a, install_code(top, top, dep), want, with_dep, cfg)
            await measure(a, "x + 1", {}, warm, cfg)
    finally:
        for session in sessions:
            await close_quietly(session)
        await server.stop()
    uncached.note = "pip resolve + install of 1 wheel into the cache, mount"
    cached.note = "pip resolve, the cache entry mounted"
    with_dep.note = "pip resolve + install of 2 wheels, mount"
    if warm.median:
        for metric in (uncached, cached, with_dep):
            if metric.median is not None:
                metric.note += f"; {metric.median / warm.median:.0f}x the warm call"
    return [uncached, cached, with_dep, warm]
