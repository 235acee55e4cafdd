"""The one seam through which kernel processes are started.

A `Launcher` turns a `KernelSlot` (the host paths one kernel needs) into a running process.
`LocalLauncher` runs ipykernel directly as the server's user; the sandbox launcher in
`kernels/sandbox.py` wraps the same command in bubblewrap. Session code never knows which.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

STARTUP_DIR = Path(__file__).parent / "startup"


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
            "-m",
            "ipykernel_launcher",
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

    async def start(self, slot: KernelSlot) -> asyncio.subprocess.Process:
        """Start the kernel process for `slot`; the connection file is already written."""
        ...

    async def claim(self, slot: KernelSlot, work_dir: Path) -> str:
        """Give the running kernel `work_dir`; return the path the kernel must chdir to."""
        ...

    async def release(self, slot: KernelSlot) -> None:
        """Undo what start/claim set up on the host once the process is gone."""
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


class LocalLauncher:
    """Runs ipykernel as the server's own user, without isolation (`--no-sandbox`)."""

    mode = "off"

    def __init__(self, command: KernelCommand) -> None:
        self.command = command

    async def start(self, slot: KernelSlot) -> asyncio.subprocess.Process:
        home = slot.runtime_dir / "home"
        home.mkdir(exist_ok=True)
        argv = self.command.argv(str(slot.connection_file), startup_files())
        env = self.command.env(home=str(home), mplconfig=mpl_config_dir(self.command.python))
        env["JPY_PARENT_PID"] = str(os.getpid())  # ipykernel exits when the server is gone
        with open(slot.log_file, "ab") as log:  # noqa: ASYNC230 (tiny, local)
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=str(home),
                env=env,
                start_new_session=True,
            )

    async def claim(self, slot: KernelSlot, work_dir: Path) -> str:
        return str(work_dir)

    async def release(self, slot: KernelSlot) -> None:
        return None


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
