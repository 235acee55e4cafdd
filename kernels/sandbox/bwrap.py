"""bubblewrap's command line for one kernel, and the probe that says whether it can run here.

bubblewrap's options go through a file descriptor (`--args`) and small files are copied in
(`--file`), not bound, so nothing the kernel can read (`/proc/1/cmdline`, its mount table)
names the checkout, the server's runtime or state dirs, a tenant or a user: every path on
the kernel's own command line is one of the fixed paths inside (`/opt/kernel`,
`/run/kernel`, `/mnt/data`). Outside bubblewrap: `prlimit` for rlimits, `setpriv` to drop to
the kernel's uid (root), or an extra user+mount namespace (not root), and a small shell that
joins the kernel's cgroups first.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from kernels.launcher import STARTUP_DIR, KernelCommand, default_kernel_python, startup_files

from .policy import SandboxPolicy, SandboxUnavailable

WORK_DIR = "/mnt/data"
SANDBOX_ENV = "/opt/kernel/env"  # the kernel venv, read-only
SANDBOX_STARTUP = "/opt/kernel/startup"  # kernels/startup, read-only
KERNEL_PACKAGES = "/opt/kernel/packages"  # installed packages, one read-only bind each
KERNEL_RUNTIME = "/run/kernel"  # the kernel's runtime dir (connection file, ipc sockets)
PASS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # host CPU quirks the kernel must keep
# Math libraries start a thread per host core; under a CPU quota the extra threads only wait
# on each other (1-core quota, 2 OpenBLAS threads: matmul 1.3-1.9x, SVD 6-10x slower).
THREAD_POOLS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NPROC_SLACK = 16  # RLIMIT_NPROC above the pids cgroup limit: the cgroup refuses first
# Joins the cgroups named before "--", then becomes the rest of the command line.
JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'
# User mode, inside the extra namespace: make the two slot dirs ($0: the work dir's, $1:
# the packages') shared mounts, so binds made there later reach the sandbox; then run bwrap.
SHARE_SLOTS = (
    'for d in "$0" "$1"; do mount --bind "$d" "$d" && mount --make-shared "$d" || exit 96; '
    'done; shift; exec "$@"'
)


@dataclass(frozen=True)
class Box:
    """One kernel's sandbox, as the command line names it."""

    uid: int
    slot_dir: Path  # bound at /mnt/data; the user's work dir is bound onto it when claimed
    packages_dir: Path  # bound read-only at /opt/kernel/packages; packages bound below it
    runtime_dir: Path  # bound at /run/kernel: the connection file and ipc sockets
    connection_file: str  # its name in the runtime dir
    cgroup_procs: tuple[str, ...] = ()  # the kernel's cgroups, joined before anything runs
    pids_cgroup: bool = False


def tool(name: str) -> str:
    path = shutil.which(name, path=TOOL_PATH)
    if path is None:
        raise SandboxUnavailable(f"{name} not found (install: make system-deps)")
    return path


def host_root_args() -> list[str]:
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


def not_traversable(path: Path, need_read: bool) -> str | None:
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
        paths = {name: tool(name) for name in tools}
    except SandboxUnavailable as exc:
        return str(exc)
    venv = Path(python or default_kernel_python()).parent.parent
    if privileged:
        for path in (venv, STARTUP_DIR):
            if path.exists() and (why := not_traversable(path, need_read=True)):
                return f"kernel uids cannot read the kernel environment: {why}"
    argv = [paths["bwrap"], "--unshare-all", "--unshare-user", "--disable-userns"]
    argv += [*host_root_args(), "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
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


def command_line(
    box: Box,
    *,
    command: KernelCommand,
    policy: SandboxPolicy,
    tools: dict[str, str],
    privileged: bool,
    seccomp: bytes | None,
    fds: list[int],
) -> list[str]:
    """The launch command of one kernel's sandbox; the file descriptors it reads its data
    from are appended to `fds` (the caller passes them on and closes them)."""

    def data(content: bytes) -> str:
        fd = os.memfd_create("kss-sandbox", 0)
        os.write(fd, content)
        os.lseek(fd, 0, os.SEEK_SET)
        fds.append(fd)
        return str(fd)

    p, t = policy, tools
    venv = Path(command.python).parent.parent
    inside = f"{SANDBOX_ENV}/bin/{Path(command.python).name}"
    command = replace(command, python=inside)
    env = command.env(home="/tmp/home", mplconfig="/tmp/mpl")
    env.update({"USER": "user", "LOGNAME": "user", "TMPDIR": "/tmp", "SHELL": "/bin/sh"})
    env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
    if p.cpus > 0:  # as many threads as the quota has cores
        env.update(dict.fromkeys(THREAD_POOLS, str(max(1, int(p.cpus)))))
    uid = box.uid
    passwd = f"root:x:0:0:root:/root:/usr/sbin/nologin\nuser:x:{uid}:{uid}::/tmp/home:/bin/sh\n"
    group = f"root:x:0:\nuser:x:{uid}:\n"
    bw = ["--unshare-all", "--unshare-user", "--disable-userns"]
    bw += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if not privileged:  # we are root of the extra namespace: be this user inside
        bw += ["--uid", str(uid), "--gid", str(os.getgid())]
    bw += host_root_args()
    bw += ["--perms", "0644", "--file", data(passwd.encode()), "/etc/passwd"]
    bw += ["--perms", "0644", "--file", data(group.encode()), "/etc/group"]
    bw += ["--proc", "/proc", "--dev", "/dev"]
    bw += ["--perms", "1777", "--size", str(p.tmp_bytes), "--tmpfs", "/tmp"]
    bw += ["--perms", "1777", "--size", str(p.tmp_bytes), "--tmpfs", "/dev/shm"]
    bw += ["--dir", "/tmp/home", "--dir", "/tmp/mpl"]
    for cache in sorted((venv / "mplconfig").glob("fontlist-*.json")):
        bw += ["--file", data(cache.read_bytes()), f"/tmp/mpl/{cache.name}"]
    bw += ["--ro-bind", str(venv), SANDBOX_ENV]
    startup = []
    for path in startup_files():
        inside_path = f"{SANDBOX_STARTUP}/{Path(path).name}"
        bw += ["--perms", "0644", "--file", data(Path(path).read_bytes()), inside_path]
        startup.append(inside_path)
    bw += ["--dir", "/mnt", "--bind", str(box.slot_dir), WORK_DIR]
    bw += ["--ro-bind", str(box.packages_dir), KERNEL_PACKAGES]
    bw += ["--bind", str(box.runtime_dir), KERNEL_RUNTIME]
    bw += ["--remount-ro", "/", "--chdir", WORK_DIR, "--clearenv"]
    for key, value in env.items():
        bw += ["--setenv", key, value]
    if seccomp is not None:
        bw += ["--seccomp", data(seccomp)]
    options = data(b"".join(arg.encode() + b"\0" for arg in bw))
    conn = f"{KERNEL_RUNTIME}/{box.connection_file}"
    inner_bw = [t["bwrap"], "--args", options, "--", *command.argv(conn, startup)]

    limits = [f"--fsize={p.file_size_bytes}", f"--nofile={p.open_files}", "--core=0"]
    if privileged:  # nproc counts per host uid: only meaningful with our own uid
        # With a pids cgroup, it is the limit that refuses a fork (and counts it in
        # pids.events, so the session can replace the kernel); nproc is the fallback.
        limits.append(f"--nproc={p.pids_max + NPROC_SLACK if box.pids_cgroup else p.pids_max}")
        drop = [t["setpriv"], f"--reuid={uid}", f"--regid={uid}"]
        inner = [*drop, "--clear-groups", "--no-new-privs", "--", *inner_bw]
    else:
        ns = [t["unshare"], "--user", "--map-root-user", "--mount", "--"]
        slots = [str(box.slot_dir), str(box.packages_dir)]
        inner = [*ns, t["sh"], "-c", SHARE_SLOTS, *slots, *inner_bw]
    argv = [t["prlimit"], *limits, "--", *inner]
    if box.cgroup_procs:
        join = [t["sh"], "-c", JOIN_CGROUPS, "kss-join", *box.cgroup_procs, "--"]
        argv = [*join, *argv]
    return argv
