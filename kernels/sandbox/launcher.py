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
the kernel runs (see `kernels/mounts.py`). The server wires it up with `cleanup_leftovers`
then `make_launcher` (see their docstrings and docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from files.paths import walk
from kernels.launcher import (
    STARTUP_DIR,
    KernelCommand,
    KernelSlot,
    Launcher,
    LocalLauncher,
    default_kernel_python,
    descendants,
    startup_files,
)
from kernels.sandbox.cgroups import CgroupTree, KernelCgroup
from kernels.sandbox.uids import UidPool, processes_by_uid

from . import mounts, seccomp

log = logging.getLogger(__name__)

WORK_DIR = "/mnt/data"
SANDBOX_ENV = "/opt/kernel/env"  # the kernel venv, read-only
SANDBOX_STARTUP = "/opt/kernel/startup"  # kernels/startup, read-only
KERNEL_RUNTIME = "/run/kernel"  # the kernel's runtime dir (connection file, ipc sockets)
STATE_SUFFIX = ".sandbox"  # state dir beside runtime_root: slot dirs, per-kernel /etc files
PASS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # host CPU quirks the kernel must keep
TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NPROC_SLACK = 16  # RLIMIT_NPROC above the pids cgroup limit: the cgroup refuses first
# Joins the cgroups named before "--", then becomes the rest of the command line.
JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'
# User mode, inside the extra namespace: make the slot dir a shared mount, then run bwrap.
SHARE_SLOT = 'mount --bind "$0" "$0" && mount --make-shared "$0" && exec "$@"'


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here; the message says why."""


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits and uids of sandboxed kernels. Fields with help are server options."""

    uid_first: int = field(
        default=2_000_000,
        metadata={
            "option": "kernel_uid_first",
            "help": "first host uid given to sandboxed kernels",
        },
    )
    uid_last: int = field(
        default=2_000_999,
        metadata={"option": "kernel_uid_last", "help": "last host uid given to sandboxed kernels"},
    )
    memory_bytes: int = field(
        default=1 << 30,
        metadata={
            "option": "kernel_memory_bytes",
            "help": "memory limit of one sandboxed kernel (cgroup)",
        },
    )
    pids_max: int = field(
        default=128,
        metadata={
            "option": "kernel_pids",
            "help": "process/thread limit of one sandboxed kernel (cgroup)",
        },
    )
    cpus: float = field(
        default=1.0,
        metadata={
            "option": "kernel_cpus",
            "help": "CPU cores one sandboxed kernel may use (cgroup quota; 0 = no cap)",
        },
    )
    file_size_bytes: int = field(
        default=50_000_000,
        metadata={
            "option": "kernel_file_bytes",
            "help": "largest file a sandboxed kernel may write (rlimit)",
        },
    )
    tmp_bytes: int = field(
        default=256 << 20,
        metadata={
            "option": "kernel_tmp_bytes",
            "help": "size of a sandboxed kernel's private /tmp",
        },
    )
    open_files: int = 1024
    cgroup_parent: str = "kss"
    require_cgroups: bool = True  # root mode refuses to start kernels without memory+pids limits
    seccomp: bool = True


@dataclass
class _Kernel:
    uid: int
    slot_dir: Path
    cgroup: KernelCgroup | None
    process: asyncio.subprocess.Process | None = None
    work_dir: Path | None = None


def _tool(name: str) -> str:
    path = shutil.which(name, path=TOOL_PATH)
    if path is None:
        raise SandboxUnavailable(f"{name} not found (install: make system-deps)")
    return path


def _host_root_args() -> list[str]:
    """Read-only `/usr` plus the merged-usr links (or real dirs) the host has."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf"):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _not_traversable(path: Path, need_read: bool) -> str | None:
    """Why a uid other than the owner cannot reach `path`, or None if it can."""
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
        except OSError as exc:
            return f"{p}: {exc.strerror}"
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return f"{p} is not traversable by other users (mode {stat.filemode(mode)})"
        if p == path and need_read and not mode & stat.S_IROTH:
            return f"{p} is not readable by other users (mode {stat.filemode(mode)})"
    return None


def check_sandbox_available(python: str | None = None) -> str | None:
    """None if sandboxed kernels can run here, else the reason they cannot."""
    privileged = os.geteuid() == 0
    try:
        tools = ["bwrap", "prlimit"] + (["setpriv"] if privileged else ["unshare", "nsenter"])
        paths = {name: _tool(name) for name in tools}
    except SandboxUnavailable as exc:
        return str(exc)
    venv = Path(python or default_kernel_python()).parent.parent
    if privileged:
        for path in (venv, STARTUP_DIR):
            if path.exists() and (why := _not_traversable(path, need_read=True)):
                return f"kernel uids cannot read the kernel environment: {why}"
    argv = [paths["bwrap"], "--unshare-all", "--unshare-user", "--disable-userns"]
    argv += [*_host_root_args(), "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
    if privileged:  # probe as an unprivileged uid: that is what kernels will be
        argv = [paths["setpriv"], "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    try:
        res = subprocess.run(argv, capture_output=True, timeout=20, env={"PATH": TOOL_PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap probe failed: {exc}"
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        return f"bubblewrap cannot create its namespaces here (user namespaces off?): {err}"
    return None


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
        self._tools = {n: _tool(n) for n in ("bwrap", "prlimit", "setpriv", "unshare", "sh")}
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
            if why := _not_traversable(self.state, need_read=False):
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
            argv = self._argv(slot, kernel, fds)
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

    def cpu_throttled(self, slot: KernelSlot) -> int:
        """CPU periods in which the quota held this kernel back (0 without a cpu cgroup)."""
        kernel = self._kernels.get(slot.kernel_id)
        return kernel.cgroup.cpu_throttled() if kernel and kernel.cgroup else 0

    def _prepare(self, slot: KernelSlot) -> _Kernel:
        if self.privileged and (why := _not_traversable(slot.runtime_dir.parent, False)):
            raise SandboxUnavailable(f"kernel uids cannot reach their runtime dir: {why}")
        uid = self.uids.allocate() if self.uids else os.getuid()
        kid = slot.kernel_id
        kernel = _Kernel(uid, self.state / "mnt" / kid, None)
        try:
            kernel.slot_dir.mkdir(mode=0o700, exist_ok=True)
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

    def _argv(self, slot: KernelSlot, kernel: _Kernel, fds: list[int]) -> list[str]:
        """The launch command. bubblewrap's options go through a file descriptor and small
        files are copied in (not bound), so nothing the kernel can read (`/proc/1/cmdline`,
        its mount table) names the checkout, the runtime or state dirs, or a user; every
        path on the kernel's command line is one of the fixed paths inside."""

        def data(content: bytes) -> str:
            fd = os.memfd_create("kss-sandbox", 0)
            os.write(fd, content)
            os.lseek(fd, 0, os.SEEK_SET)
            fds.append(fd)
            return str(fd)

        p, t = self.policy, self._tools
        inside = f"{SANDBOX_ENV}/bin/{Path(self.command.python).name}"
        command = replace(self.command, python=inside)
        env = command.env(home="/tmp/home", mplconfig="/tmp/mpl")
        env.update({"USER": "user", "LOGNAME": "user", "TMPDIR": "/tmp", "SHELL": "/bin/sh"})
        env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
        uid = kernel.uid
        passwd = f"root:x:0:0:root:/root:/usr/sbin/nologin\nuser:x:{uid}:{uid}::/tmp/home:/bin/sh\n"
        group = f"root:x:0:\nuser:x:{uid}:\n"
        bw = ["--unshare-all", "--unshare-user", "--disable-userns"]
        bw += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
        if not self.privileged:  # we are root of the extra namespace: be this user inside
            bw += ["--uid", str(kernel.uid), "--gid", str(os.getgid())]
        bw += _host_root_args()
        bw += ["--perms", "0644", "--file", data(passwd.encode()), "/etc/passwd"]
        bw += ["--perms", "0644", "--file", data(group.encode()), "/etc/group"]
        bw += ["--proc", "/proc", "--dev", "/dev"]
        bw += ["--perms", "1777", "--size", str(p.tmp_bytes), "--tmpfs", "/tmp"]
        bw += ["--perms", "1777", "--size", str(p.tmp_bytes), "--tmpfs", "/dev/shm"]
        bw += ["--dir", "/tmp/home", "--dir", "/tmp/mpl"]
        for cache in sorted((self.venv / "mplconfig").glob("fontlist-*.json")):
            bw += ["--file", data(cache.read_bytes()), f"/tmp/mpl/{cache.name}"]
        bw += ["--ro-bind", str(self.venv), SANDBOX_ENV]
        startup = []
        for path in startup_files():
            inside_path = f"{SANDBOX_STARTUP}/{Path(path).name}"
            bw += ["--perms", "0644", "--file", data(Path(path).read_bytes()), inside_path]
            startup.append(inside_path)
        bw += ["--dir", "/mnt", "--bind", str(kernel.slot_dir), WORK_DIR]
        bw += ["--bind", str(slot.runtime_dir), KERNEL_RUNTIME]
        bw += ["--remount-ro", "/", "--chdir", WORK_DIR, "--clearenv"]
        for key, value in env.items():
            bw += ["--setenv", key, value]
        if self._seccomp is not None:
            bw += ["--seccomp", data(self._seccomp)]
        options = data(b"".join(arg.encode() + b"\0" for arg in bw))
        conn = f"{KERNEL_RUNTIME}/{slot.connection_file.name}"
        inner_bw = [t["bwrap"], "--args", options, "--", *command.argv(conn, startup)]

        limits = [f"--fsize={p.file_size_bytes}", f"--nofile={p.open_files}", "--core=0"]
        if self.privileged:  # nproc counts per host uid: only meaningful with our own uid
            # With a pids cgroup, it is the limit that refuses a fork (and counts it in
            # pids.events, so the session can replace the kernel); nproc is the fallback.
            has_pids = kernel.cgroup is not None and "pids" in kernel.cgroup.paths
            limits.append(f"--nproc={p.pids_max + NPROC_SLACK if has_pids else p.pids_max}")
            drop = [t["setpriv"], f"--reuid={kernel.uid}", f"--regid={kernel.uid}"]
            inner = [*drop, "--clear-groups", "--no-new-privs", "--", *inner_bw]
        else:
            ns = [t["unshare"], "--user", "--map-root-user", "--mount", "--"]
            inner = [*ns, t["sh"], "-c", SHARE_SLOT, str(kernel.slot_dir), *inner_bw]
        argv = [t["prlimit"], *limits, "--", *inner]
        if kernel.cgroup:
            join = [t["sh"], "-c", JOIN_CGROUPS, "kss-join", *kernel.cgroup.procs_files, "--"]
            argv = [*join, *argv]
        return argv

    def _teardown(self, kid: str, kernel: _Kernel) -> None:
        """Undo `_prepare` and `claim` on the host (blocking)."""
        if self.privileged:
            try:
                mounts.unbind_host(kernel.slot_dir)
            except OSError as exc:
                log.error("kernel %s: cannot unmount %s: %s", kid, kernel.slot_dir, exc)
        if kernel.cgroup:
            kernel.cgroup.destroy()
        with contextlib.suppress(FileNotFoundError):
            if mounts.mounts_under(kernel.slot_dir):
                log.error("kernel %s: %s still mounted, left in place", kid, kernel.slot_dir)
            else:
                kernel.slot_dir.rmdir()  # never rmtree: it may have been a user's work dir
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
