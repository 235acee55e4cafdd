"""The sandboxed kernel launcher: bubblewrap + own uid + cgroup + rlimits + seccomp.

Each kernel runs under bubblewrap with every namespace unshared (no network, own pid, ipc,
uts, mount and user namespace, nested user namespaces disabled), sees read-only `/usr`, the
kernel venv and startup files (at fixed paths under `/opt/kernel`), its private runtime dir
(ipc sockets), a size-limited `/tmp` and `/mnt/data`, nothing else of the host.
As root the process runs as its own host uid from `SandboxPolicy`'s range and joins a
memory+pids cgroup before dropping privileges ("uid" mode). As an ordinary user it runs as
that user inside an extra user namespace ("userns" mode): same filesystem view and
namespaces, but no uid of its own.

Warm kernels start with an empty `/mnt/data`; `claim` binds the user's work dir there while
the kernel runs (see `mounts.py`); `bwrap.py` writes the command line. The server wires it
up with `cleanup_leftovers` then `make_launcher` (see their docstrings and docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from files.paths import walk
from kernels.launcher import (
    KernelCommand,
    KernelSlot,
    Launcher,
    LocalLauncher,
    default_kernel_python,
    descendants,
)
from kernels.sandbox.cgroups import CgroupTree, KernelCgroup
from kernels.sandbox.uids import UidPool, processes_by_uid

from . import mounts, seccomp
from .bwrap import (
    KERNEL_PACKAGES,
    KERNEL_RUNTIME,
    TOOL_PATH,
    WORK_DIR,
    Box,
    check_sandbox_available,
    command_line,
    not_traversable,
    tool,
)
from .policy import SandboxPolicy, SandboxUnavailable

log = logging.getLogger(__name__)

STATE_SUFFIX = ".sandbox"  # state dir beside runtime_root: slot dirs


@dataclass
class _Kernel:
    uid: int
    slot_dir: Path
    cgroup: KernelCgroup | None

    @property
    def packages_dir(self) -> Path:
        return self.slot_dir.with_name(self.slot_dir.name + ".pkg")

    process: asyncio.subprocess.Process | None = None
    work_dir: Path | None = None


class SandboxLauncher:
    """Starts each kernel in its own bubblewrap sandbox; see the module docstring."""

    runtime_view = KERNEL_RUNTIME

    def __init__(self, command: KernelCommand, policy: SandboxPolicy, runtime_root: Path) -> None:
        self.command = command
        self.policy = policy
        self.privileged = os.geteuid() == 0
        self.mode = "uid" if self.privileged else "userns"
        self.runtime_root = runtime_root.resolve()  # mountinfo lists real paths
        self.state = state_dir(self.runtime_root)
        self.venv = Path(command.python).parent.parent
        self.uids = UidPool(policy.uid_first, policy.uid_last) if self.privileged else None
        self._kernels: dict[str, _Kernel] = {}
        self._tools = {n: tool(n) for n in ("bwrap", "prlimit", "setpriv", "unshare", "sh")}
        self._seccomp = seccomp.build_filter() if policy.seccomp else None
        if policy.seccomp and self._seccomp is None:
            log.warning("no seccomp table for this architecture: kernels run without one")
        self._prepare_dirs()
        self.cgroups = CgroupTree.create(policy.cgroup_parent, instance_name(self.state))
        self._check_cgroups()
        who = (
            f"own uid per kernel from {policy.uid_first}-{policy.uid_last}"
            if self.privileged
            else "kernels run as this user (not root: no uid switching)"
        )
        cgroups = self.cgroups.description if self.cgroups else "none"
        log.info("sandbox mode %s: %s; cgroups %s", self.mode, who, cgroups)

    def _prepare_dirs(self) -> None:
        for path in (self.state, *(self.state / d for d in ("mnt", "stage"))):
            path.mkdir(parents=True, exist_ok=True)
            if self.privileged:  # kernel uids pass through to their own entries only
                os.chmod(path, 0o711)
        if self.privileged:
            if why := not_traversable(self.state, need_read=False):
                raise SandboxUnavailable(f"kernel uids cannot reach {self.state}: {why}")
            mounts.make_shared_root(self.state / "mnt")

    def _check_cgroups(self) -> None:
        have = set(self.cgroups.hierarchies) if self.cgroups else set()
        if have >= {"memory", "pids"}:
            return
        missing = ", ".join(sorted({"memory", "pids"} - have))
        if self.privileged and self.policy.require_cgroups:
            raise SandboxUnavailable(f"no writable cgroup for {missing} (kernel limits)")
        log.warning("kernels run WITHOUT cgroup limits for %s (only rlimits apply)", missing)

    # -- Launcher protocol -------------------------------------------------------------

    async def start(self, slot: KernelSlot) -> asyncio.subprocess.Process:
        kernel = await asyncio.to_thread(self._prepare, slot)
        self._kernels[slot.kernel_id] = kernel
        fds: list[int] = []
        try:
            box = Box(
                uid=kernel.uid,
                slot_dir=kernel.slot_dir,
                packages_dir=kernel.packages_dir,
                runtime_dir=slot.runtime_dir,
                connection_file=slot.connection_file.name,
                cgroup_procs=tuple(kernel.cgroup.procs_files) if kernel.cgroup else (),
                pids_cgroup=kernel.cgroup is not None and "pids" in kernel.cgroup.paths,
            )
            argv = command_line(
                box,
                command=self.command,
                policy=self.policy,
                tools=self._tools,
                privileged=self.privileged,
                seccomp=self._seccomp,
                fds=fds,
            )
            with open(slot.log_file, "ab") as out:  # noqa: ASYNC230 (tiny, local)
                kernel.process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    cwd="/",
                    env={"PATH": TOOL_PATH},
                    start_new_session=True,
                    pass_fds=fds,
                )
        except BaseException:
            await self.release(slot)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        log.info(
            "kernel %s sandboxed: pid %d uid %d", slot.kernel_id, kernel.process.pid, kernel.uid
        )
        return kernel.process

    async def claim(self, slot: KernelSlot, work_dir: Path) -> str:
        kernel = self._kernels[slot.kernel_id]
        work_dir = await asyncio.to_thread(work_dir.resolve)
        if self.privileged:
            await asyncio.to_thread(_own_tree, work_dir, kernel.uid)
            stage = self.state / "stage" / slot.kernel_id
            await asyncio.to_thread(mounts.bind_host, work_dir, kernel.slot_dir, stage)
        else:
            await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
            assert kernel.process is not None
            await _wait_own_mount_ns(kernel.process.pid)
            await mounts.bind_in_namespace(kernel.process.pid, work_dir, kernel.slot_dir)
        kernel.work_dir = work_dir
        log.info("kernel %s claimed work dir %s", slot.kernel_id, work_dir)
        return WORK_DIR

    async def add_packages(self, slot: KernelSlot, dirs: list[Path]) -> list[str]:
        """Bind each package dir read-only below the kernel's /opt/kernel/packages."""
        kernel = self._kernels[slot.kernel_id]
        inside = []
        for source in dirs:
            target = kernel.packages_dir / source.name
            await asyncio.to_thread(target.mkdir, exist_ok=True)
            if self.privileged:
                stage = self.state / "stage" / f"{slot.kernel_id}-{source.name}"
                await asyncio.to_thread(mounts.bind_host, source, target, stage, True)
            else:
                assert kernel.process is not None
                await _wait_own_mount_ns(kernel.process.pid)
                await mounts.bind_in_namespace(kernel.process.pid, source, target, readonly=True)
            inside.append(f"{KERNEL_PACKAGES}/{source.name}")
        return inside

    async def release(self, slot: KernelSlot) -> None:
        kernel = self._kernels.pop(slot.kernel_id, None)
        if kernel is None:
            return
        proc = kernel.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await proc.wait()
        await asyncio.to_thread(self._teardown, slot.kernel_id, kernel)

    # -- helpers -----------------------------------------------------------------------

    def oom_killed(self, slot: KernelSlot) -> bool:
        """Whether the memory limit killed a process of this kernel (call before release)."""
        kernel = self._kernels.get(slot.kernel_id)
        return bool(kernel and kernel.cgroup and kernel.cgroup.oom_kills())

    def processes(self, slot: KernelSlot) -> set[int]:
        kernel = self._kernels.get(slot.kernel_id)
        if kernel is None or kernel.process is None:
            return set()
        if kernel.cgroup is not None and "pids" in kernel.cgroup.paths:
            return kernel.cgroup.pids()
        return descendants(kernel.process.pid)

    def process_limit_hits(self, slot: KernelSlot) -> int:
        kernel = self._kernels.get(slot.kernel_id)
        return kernel.cgroup.pids_limit_hits() if kernel and kernel.cgroup else 0

    def prioritize(self, slot: KernelSlot, nice: int) -> None:
        kernel = self._kernels.get(slot.kernel_id)
        if kernel is not None and kernel.cgroup is not None:
            with contextlib.suppress(OSError):  # gone
                kernel.cgroup.set_cpu_weight(nice)

    def cpu_throttled(self, slot: KernelSlot) -> int:
        """CPU periods in which the quota held this kernel back (0 without a cpu cgroup)."""
        kernel = self._kernels.get(slot.kernel_id)
        return kernel.cgroup.cpu_throttled() if kernel and kernel.cgroup else 0

    def _prepare(self, slot: KernelSlot) -> _Kernel:
        if self.privileged and (why := not_traversable(slot.runtime_dir.parent, False)):
            raise SandboxUnavailable(f"kernel uids cannot reach their runtime dir: {why}")
        uid = self.uids.allocate() if self.uids else os.getuid()
        kid = slot.kernel_id
        kernel = _Kernel(uid, self.state / "mnt" / kid, None)
        try:
            kernel.slot_dir.mkdir(mode=0o700, exist_ok=True)
            kernel.packages_dir.mkdir(mode=0o755, exist_ok=True)
            for path, mode in ((slot.runtime_dir, 0o700), (slot.connection_file, 0o600)):
                if self.privileged:
                    os.chown(path, uid, uid)
                os.chmod(path, mode)
            if self.privileged:
                os.chown(kernel.slot_dir, uid, uid)
            if self.cgroups:
                p = self.policy
                kernel.cgroup = self.cgroups.kernel(kid, p.memory_bytes, p.pids_max, p.cpus)
        except BaseException:
            self._teardown(kid, kernel)
            raise
        return kernel

    def _teardown(self, kid: str, kernel: _Kernel) -> None:
        """Undo `_prepare` and `claim` on the host (blocking)."""
        if self.privileged:
            try:
                mounts.unbind_host(kernel.slot_dir)
                for point in mounts.mounts_under(kernel.packages_dir):
                    mounts.umount(point)
            except OSError as exc:
                log.error("kernel %s: cannot unmount its slots: %s", kid, exc)
        if kernel.cgroup:
            kernel.cgroup.destroy()
        with contextlib.suppress(FileNotFoundError):
            if mounts.mounts_under(kernel.slot_dir):
                log.error("kernel %s: %s still mounted, left in place", kid, kernel.slot_dir)
            else:
                kernel.slot_dir.rmdir()  # never rmtree: it may have been a user's work dir
        with contextlib.suppress(FileNotFoundError):
            if not mounts.mounts_under(kernel.packages_dir):  # only empty mount points left
                for entry in kernel.packages_dir.iterdir():
                    entry.rmdir()
                kernel.packages_dir.rmdir()
        if self.uids:
            strays = processes_by_uid(range(kernel.uid, kernel.uid + 1)).get(kernel.uid, [])
            for pid in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            if strays:
                log.warning(
                    "kernel %s: killed stray processes %s of uid %d", kid, strays, kernel.uid
                )
            self.uids.release(kernel.uid)


def _own_tree(root: Path, uid: int) -> None:
    """Give `root` and everything in it to `uid`, never following symlinks (fd-relative)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chown(root, uid, uid, follow_symlinks=False)
    os.chmod(root, 0o700)
    for _rel, dirnames, filenames, dirfd in walk(root):  # no recursion, however deep
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(name, uid, uid, dir_fd=dirfd, follow_symlinks=False)


async def _wait_own_mount_ns(pid: int, timeout: float = 10.0) -> None:
    """Wait until `pid` has left our mount namespace (user mode start is still under way)."""
    ours = os.readlink("/proc/self/ns/mnt")
    async with asyncio.timeout(timeout):
        while os.readlink(f"/proc/{pid}/ns/mnt") == ours:
            await asyncio.sleep(0.005)


def state_dir(runtime_root: Path) -> Path:
    """The sandbox's host state, beside (not in) the runtime root the pool wipes."""
    return runtime_root.parent / (runtime_root.name + STATE_SUFFIX)


def instance_name(state: Path) -> str:
    """Stable name of this server instance's cgroup: one per state dir."""
    return "i" + hashlib.sha1(str(state).encode()).hexdigest()[:12]


async def cleanup_leftovers(runtime_root: Path, policy: SandboxPolicy | None = None) -> None:
    """Remove what a crashed (or stopped) server's sandbox left: kernels, cgroups, mounts.

    Call with the same runtime root and policy before `make_launcher` at start-up, and again
    after the pool has stopped every kernel at shutdown. It kills the processes left in this
    instance's kernel cgroups, detaches the mounts of the sandbox state dir (`<root>.sandbox`)
    and deletes it. It never deletes through a mount, so users' work dirs are safe.
    """
    root = await asyncio.to_thread(runtime_root.resolve)  # mountinfo lists real paths
    await asyncio.to_thread(_cleanup_leftovers, state_dir(root), policy or SandboxPolicy())


def _cleanup_leftovers(root: Path, policy: SandboxPolicy) -> None:
    if os.geteuid() == 0:
        tree = CgroupTree.create(policy.cgroup_parent, instance_name(root))
        if tree and (n := tree.remove_leftovers()):
            log.warning("removed %d leftover kernel cgroups of a previous run", n)
        for point in mounts.mounts_under(root):
            mounts.umount(point)
            shared_root = point == str(root / "mnt")  # normal at shutdown; a bind is not
            log.log(logging.INFO if shared_root else logging.WARNING, "detached mount %s", point)
        strays = processes_by_uid(range(policy.uid_first, policy.uid_last + 1))
        if strays:
            log.warning("processes still run as kernel uids %s: those uids stay unused", strays)
    if mounts.mounts_under(root):  # never delete through a mount into someone's files
        raise SandboxUnavailable(f"mounts remain below {root}; not cleaning it")
    shutil.rmtree(root, ignore_errors=True)


def make_launcher(
    *,
    sandbox: bool,
    runtime_root: Path,
    policy: SandboxPolicy | None = None,
    command: KernelCommand | None = None,
) -> Launcher:
    """The launcher for server start-up; raises SandboxUnavailable rather than run unsandboxed.

    `sandbox=False` (`--no-sandbox` / `KSS_SANDBOX=off`) gives a `LocalLauncher`, loudly.
    """
    command = command or KernelCommand(python=default_kernel_python())
    if not sandbox:
        log.warning(
            "SANDBOX DISABLED: kernels run as %s with full access to this machine, its network "
            "and every user's files. Never expose this server to untrusted code.",
            "root" if os.geteuid() == 0 else f"uid {os.geteuid()}",
        )
        return LocalLauncher(command)
    if reason := check_sandbox_available(command.python):
        raise SandboxUnavailable(
            f"cannot sandbox kernels: {reason}. Fix it, or run with --no-sandbox / "
            "KSS_SANDBOX=off to run kernels unisolated (unsafe)."
        )
    return SandboxLauncher(command, policy or SandboxPolicy(), runtime_root)
