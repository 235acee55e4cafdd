"""The one seam through which kernel processes are started.

A `Launcher` turns a `KernelSlot` (the host paths one kernel needs) into a running process.
`LocalLauncher` runs ipykernel directly as the server's user; the sandbox launcher in
`kernels/sandbox/` wraps the same command in bubblewrap. Session code never knows which.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

STARTUP_DIR = Path(__file__).parent / "startup"

# What `python -m ipykernel_launcher` does, without the debugger: ipykernel imports debugpy
# whenever it is installed, ~50 ms of every kernel start's ~210 ms of CPU and 7 MB of each
# kernel's memory, and nothing in this server speaks the debug protocol. A `None` in
# `sys.modules` makes the import fail, so ipykernel runs without it (its kernel_info lists
# no `debugger` feature); the entry is gone again before any user code runs, so code that
# imports debugpy itself still can. The cwd leaves `sys.path` while ipykernel loads, as in
# the launcher (IPython puts it back).
LAUNCH = (
    "import sys; del sys.path[0]; sys.modules['debugpy'] = None; "
    "from ipykernel.kernelapp import IPKernelApp; "
    "app = IPKernelApp.instance(); app.initialize(); del sys.modules['debugpy']; app.start()"
)


@dataclass(frozen=True)
class KernelSlot:
    """Host paths of one kernel: its private runtime dir (connection file, ipc sockets)."""

    kernel_id: str
    runtime_dir: Path
    connection_file: Path
    ipc_prefix: str

    @property
    def log_file(self) -> Path:
        return self.runtime_dir / "kernel.log"


@dataclass(frozen=True)
class KernelCommand:
    """What to execute for a kernel, before any sandbox wraps it."""

    python: str
    extra_env: dict[str, str] = field(default_factory=dict)

    def argv(self, connection_file: str, startup_files: list[str]) -> list[str]:
        files = ",".join(repr(f) for f in startup_files)
        return [
            self.python,
            "-c",
            LAUNCH,
            "-f",
            connection_file,
            # One shared history database serialises every kernel under load; we keep our
            # own transcript, so IPython's history is off.
            "--HistoryManager.enabled=False",
            f"--IPKernelApp.exec_files=[{files}]",
            "--IPKernelApp.quiet=True",
        ]

    def env(self, home: str, mplconfig: str) -> dict[str, str]:
        bindir = str(Path(self.python).parent)
        env = {
            "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "MPLCONFIGDIR": mplconfig,
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "JUPYTER_PLATFORM_DIRS": "1",
        }
        env.update(self.extra_env)
        return env


class Launcher(Protocol):
    """Starts kernel processes and gives them a user's work dir when a session claims them."""

    mode: str
    runtime_view: str | None  # where the kernel sees its runtime dir; None: at its host path

    async def start(self, slot: KernelSlot) -> asyncio.subprocess.Process:
        """Start the kernel process for `slot`; the connection file is already written."""
        ...

    async def claim(self, slot: KernelSlot, work_dir: Path) -> str:
        """Give the running kernel `work_dir`; return the path the kernel must chdir to."""
        ...

    async def release(self, slot: KernelSlot) -> None:
        """Undo what start/claim set up on the host once the process is gone."""
        ...

    def processes(self, slot: KernelSlot) -> set[int]:
        """Host pids of every process of the kernel (the kernel, its wrappers, children)."""
        ...

    async def add_packages(self, slot: KernelSlot, dirs: list[Path]) -> list[str]:
        """Make installed package dirs readable by the running kernel; the paths it must
        put on its `sys.path`."""
        ...

    def process_limit_hits(self, slot: KernelSlot) -> int:
        """How many times the kernel's process limit refused a fork (0 where unknown)."""
        ...

    def prioritize(self, slot: KernelSlot, nice: int) -> None:
        """Whatever else than its processes' nice gives the kernel the CPU share of `nice`
        (a sandbox's cpu cgroup); nothing where nothing else does."""
        ...


def default_kernel_python() -> str:
    """The kernel interpreter: the repo's `.kernel-venv` when built, else this Python."""
    venv = Path(__file__).resolve().parent.parent / ".kernel-venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def mpl_config_dir(python: str) -> str:
    """The matplotlib cache the Makefile prebuilds beside the kernel venv (no rebuild)."""
    prebuilt = Path(python).parent.parent / "mplconfig"
    return str(prebuilt) if prebuilt.is_dir() else tempfile.gettempdir() + "/kss-mplconfig"


def startup_files() -> list[str]:
    return sorted(str(p) for p in STARTUP_DIR.glob("*.py") if not p.name.startswith("_"))


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it, from `/proc/<pid>/task/*/children`.

    A process that double-forks out of the tree is found only where the tree has an init
    of its own (a sandbox's pid namespace) that adopts it.
    """
    found: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.add(current)
        try:
            tasks = os.open(f"/proc/{current}/task", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            for tid in os.listdir(tasks):
                children = _read_proc(f"{tid}/children", tasks)
                stack.extend(int(child) for child in children.split())
        finally:
            os.close(tasks)
    return found


PROC_READ = 65536


def _read_proc(path: str, dir_fd: int | None = None) -> bytes:
    """A /proc file's bytes (b"" when it is gone), with plain syscalls: the stray check reads
    one per kernel thread after every execution (a dozen for ipykernel), and `open()`'s
    buffered text file took half of its time. A read that leaves room for another record
    (a pid and its separator: well under 32 bytes) is the whole file, so one read is
    enough (/proc's seq files fill the buffer while a record fits); paths relative to
    `dir_fd` skip most of the lookup."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return b""
    chunks = []
    try:
        while chunk := os.read(fd, PROC_READ):
            chunks.append(chunk)
            if len(chunk) < PROC_READ - 32:
                break
    except OSError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: set[int]) -> float:
    """CPU time used by `pids` and the children they reaped (from `/proc/<pid>/stat`)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            continue
    return total / _TICKS


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True  # gone


async def stop_processes(launcher: Launcher, slot: KernelSlot, keep: set[int]) -> int:
    """SIGKILL every process of the kernel not in `keep`, until none is left; return how
    many were killed. A process forking as fast as it can is caught within a few rounds."""
    killed: set[int] = set()
    for _ in range(50):
        extra = {p for p in launcher.processes(slot) - keep if not is_zombie(p)}
        if not extra:
            break
        for pid in extra:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= extra
        await asyncio.sleep(0.005)
    return len(killed)


class LocalLauncher:
    """Runs ipykernel as the server's own user, without isolation (`--no-sandbox`)."""

    mode = "off"
    runtime_view = None

    def __init__(self, command: KernelCommand) -> None:
        self.command = command
        self._pids: dict[str, int] = {}

    async def start(self, slot: KernelSlot) -> asyncio.subprocess.Process:
        home = slot.runtime_dir / "home"
        home.mkdir(exist_ok=True)
        argv = self.command.argv(str(slot.connection_file), startup_files())
        env = self.command.env(home=str(home), mplconfig=mpl_config_dir(self.command.python))
        env["JPY_PARENT_PID"] = str(os.getpid())  # ipykernel exits when the server is gone
        with open(slot.log_file, "ab") as log:  # noqa: ASYNC230 (tiny, local)
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=str(home),
                env=env,
                start_new_session=True,
            )
        self._pids[slot.kernel_id] = process.pid
        return process

    async def claim(self, slot: KernelSlot, work_dir: Path) -> str:
        return str(work_dir)

    async def release(self, slot: KernelSlot) -> None:
        self._pids.pop(slot.kernel_id, None)

    def processes(self, slot: KernelSlot) -> set[int]:
        pid = self._pids.get(slot.kernel_id)
        return descendants(pid) if pid is not None else set()

    async def add_packages(self, slot: KernelSlot, dirs: list[Path]) -> list[str]:
        return [str(d) for d in dirs]

    def process_limit_hits(self, slot: KernelSlot) -> int:
        return 0

    def prioritize(self, slot: KernelSlot, nice: int) -> None:
        return None  # its processes' nice (and their session's autogroup) is all there is


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
