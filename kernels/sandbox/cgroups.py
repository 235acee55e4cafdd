"""Per-kernel memory, pids and CPU limits through cgroups, v2 or v1 (whichever holds each).

A `CgroupTree` is the parent group of one server instance (`<hierarchy>/kss/<instance>`);
each kernel gets a child `KernelCgroup` that its launch wrapper joins before dropping
privileges, so every process of the sandbox is accounted from its first instruction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids")  # required in root mode
OPTIONAL = ("cpu",)  # used where available: a CPU quota, and fair shares between kernels
CPU_PERIOD_US = 100_000
# The scheduler's weight of each nice value, -20 to 19 (kernel/sched/core.c:
# sched_prio_to_weight); cgroup v1's cpu.shares is on this scale, v2's cpu.weight on 100 for 1024.
NICE_WEIGHTS = (
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
)  # fmt: skip


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller lives: a cgroup2 mount or the v1 mount that carries it."""

    controller: str
    mount: Path
    version: int


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount of this process."""
    rows = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            fstype, _source, opts = right.split()[:3]
            rows.append((point, fstype, opts))
    return rows


def find_hierarchies() -> dict[str, Hierarchy]:
    """Locate each controller: a v2 mount offering it wins, else the v1 mount carrying it."""
    found: dict[str, Hierarchy] = {}
    rows = _mountinfo()
    for point, fstype, _opts in rows:
        if fstype != "cgroup2":
            continue
        try:
            offered = Path(point, "cgroup.controllers").read_text().split()
        except OSError:
            continue
        for name in CONTROLLERS + OPTIONAL:
            if name in offered and name not in found:
                found[name] = Hierarchy(name, Path(point), 2)
    for point, fstype, opts in rows:
        if fstype != "cgroup":
            continue
        for name in CONTROLLERS + OPTIONAL:
            if name in opts.split(",") and name not in found:
                found[name] = Hierarchy(name, Path(point), 1)
    return found


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _enable_v2(group: Path, top: Path, name: str) -> None:
    """Enable controller `name` in subtree_control of every level from `top` down to `group`."""
    chain = [group, *group.parents]
    levels = [p for p in reversed(chain) if p == top or top in p.parents]
    for level in levels:
        level.mkdir(exist_ok=True)
        control = level / "cgroup.subtree_control"
        if name not in control.read_text().split():
            _write(control, f"+{name}")


class KernelCgroup:
    """One kernel's group in each hierarchy; `procs_files` are what its wrapper joins."""

    def __init__(self, paths: dict[str, tuple[Path, int]]) -> None:
        self.paths = paths

    @property
    def procs_files(self) -> list[str]:
        unique = {str(path / "cgroup.procs") for path, _version in self.paths.values()}
        return sorted(unique)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path, _version in self.paths.values():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return found

    def set_cpu_weight(self, nice: int) -> None:
        """Give the group the CPU share against its siblings that a process of `nice` has
        against others (groups are scheduled as one: their processes' nice counts only
        inside them). Nothing without a cpu controller."""
        if "cpu" not in self.paths:
            return
        path, version = self.paths["cpu"]
        weight = NICE_WEIGHTS[max(-20, min(19, nice)) + 20]
        if version == 2:
            _write(path / "cpu.weight", str(max(1, min(10000, round(weight * 100 / 1024)))))
        else:
            _write(path / "cpu.shares", str(max(2, weight)))

    def oom_kills(self) -> int:
        """How many processes the memory limit has killed (0 if unknown)."""
        if "memory" not in self.paths:
            return 0
        path, version = self.paths["memory"]
        name = "memory.events" if version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def pids_limit_hits(self) -> int:
        """How many forks the pids limit has refused (0 if unknown)."""
        if "pids" not in self.paths:
            return 0
        with contextlib.suppress(OSError, ValueError):
            for line in (self.paths["pids"][0] / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        return 0

    def cpu_throttled(self) -> int:
        """How many CPU periods the quota throttled this kernel in (0 if unknown)."""
        if "cpu" not in self.paths:
            return 0
        with contextlib.suppress(OSError):
            for line in (self.paths["cpu"][0] / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "nr_throttled":
                    return int(value)
        return 0

    def memory_peak(self) -> int | None:
        if "memory" not in self.paths:
            return None
        path, version = self.paths["memory"]
        name = "memory.peak" if version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((path / name).read_text())
        return None

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill whatever is left inside and remove the groups (blocking; run in a thread)."""
        remove_group_dirs([path for path, _version in self.paths.values()], timeout)


def remove_group_dirs(paths: list[Path], timeout: float = 5.0) -> None:
    """SIGKILL every process in `paths` (and below), then rmdir them, children first."""
    deadline = time.monotonic() + timeout
    dirs: list[Path] = []
    for path in paths:
        if path.is_dir():
            dirs.extend(sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True))
            dirs.append(path)
    for d in dirs:
        kill_file = d / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        while True:
            try:
                pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    log.warning("cannot remove cgroup %s: %s", d, exc)
                    break
                time.sleep(0.02)


class CgroupTree:
    """The parent group of this server instance; creates and removes kernels' groups."""

    def __init__(self, hierarchies: dict[str, Hierarchy], relative: Path) -> None:
        self.hierarchies = hierarchies
        self.relative = relative

    @classmethod
    def create(cls, parent: str, instance: str) -> CgroupTree | None:
        """Set up `<hierarchy>/<parent>/<instance>`; None if no controller is usable here."""
        hierarchies = find_hierarchies()
        missing = [name for name in CONTROLLERS + OPTIONAL if name not in hierarchies]
        if missing:
            log.warning("cgroup controllers not available: %s", ", ".join(missing))
        usable: dict[str, Hierarchy] = {}
        relative = Path(parent.strip("/")) / instance
        for name, h in hierarchies.items():
            group = h.mount / relative
            try:
                if h.version == 2:
                    _enable_v2(group, h.mount, name)
                else:
                    group.mkdir(parents=True, exist_ok=True)
                usable[name] = h
            except OSError as exc:
                log.warning("cgroup %s (v%d) at %s not writable: %s", name, h.version, group, exc)
        if not usable:
            return None
        return cls(usable, relative)

    @property
    def description(self) -> str:
        parts = [f"{n}:v{h.version}:{h.mount / self.relative}" for n, h in self.hierarchies.items()]
        return ", ".join(sorted(parts))

    def kernel(self, name: str, memory_bytes: int, pids_max: int, cpus: float) -> KernelCgroup:
        """Create the group of one kernel with its limits (blocking); `cpus` 0 = no quota."""
        paths: dict[str, tuple[Path, int]] = {}
        for controller, h in self.hierarchies.items():
            path = h.mount / self.relative / name
            path.mkdir(exist_ok=True)
            paths[controller] = (path, h.version)
        try:
            for controller, (path, version) in paths.items():
                if controller == "memory":
                    _set_memory(path, version, memory_bytes)
                elif controller == "pids":
                    _write(path / "pids.max", str(pids_max))
                elif controller == "cpu" and cpus > 0:
                    _set_cpu_quota(path, version, cpus)
        except OSError:
            KernelCgroup(paths).destroy()
            raise
        return KernelCgroup(paths)

    def remove_leftovers(self) -> int:
        """Kill and remove every kernel group of a previous run of this instance; how many
        kernels had groups (one kernel has a group in each hierarchy)."""
        tops = {h.mount / self.relative for h in self.hierarchies.values()}  # v2 shares one
        stale = []
        for top in tops:
            with contextlib.suppress(FileNotFoundError):
                stale += [child for child in top.iterdir() if child.is_dir()]
        remove_group_dirs(stale)
        for top in tops:
            with contextlib.suppress(OSError):
                top.rmdir()
        return len({child.name for child in stale})


def _set_memory(path: Path, version: int, limit: int) -> None:
    if version == 2:
        _write(path / "memory.max", str(limit))
        with contextlib.suppress(OSError):
            _write(path / "memory.swap.max", "0")
        return
    _write(path / "memory.limit_in_bytes", str(limit))
    memsw = path / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        _write(memsw, str(limit))


def _set_cpu_quota(path: Path, version: int, cpus: float) -> None:
    """At most `cpus` cores' worth of CPU time per period (1.5 = one and a half cores)."""
    quota = max(1000, round(cpus * CPU_PERIOD_US))
    if version == 2:
        _write(path / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        return
    _write(path / "cpu.cfs_period_us", str(CPU_PERIOD_US))
    _write(path / "cpu.cfs_quota_us", str(quota))
