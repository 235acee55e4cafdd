"""kernels/launcher.py: the kernel's command line and environment, process trees read from
/proc (with real processes started here), stopping what an execution left running, and the
`LocalLauncher` with a real kernel."""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil

from kernels.kernel import Kernel
from kernels.launcher import (
    LAUNCH,
    STARTUP_DIR,
    KernelCommand,
    KernelSlot,
    LocalLauncher,
    cpu_seconds,
    default_kernel_python,
    descendants,
    ensure_private_dir,
    is_zombie,
    mpl_config_dir,
    startup_files,
    stop_processes,
)
from tests.kernels.driving import execute, start_local_kernel
from tests.polling import until

REPO = Path(__file__).resolve().parents[2]

# -- the command ------------------------------------------------------------------------------


def test_argv_runs_ipykernel_with_our_startup_files_and_no_history() -> None:
    files = ["/opt/kernel/startup/00_kss.py", "/weird dir/it's.py"]
    argv = KernelCommand("/opt/env/bin/python").argv("/run/kernel/conn.json", files)
    assert argv[:5] == ["/opt/env/bin/python", "-c", LAUNCH, "-f", "/run/kernel/conn.json"]
    assert "--HistoryManager.enabled=False" in argv and "--IPKernelApp.quiet=True" in argv
    [exec_files] = [a for a in argv if a.startswith("--IPKernelApp.exec_files=")]
    assert ast.literal_eval(exec_files.partition("=")[2]) == files  # a list traitlets can read
    empty = KernelCommand("python").argv("c.json", [])
    assert "--IPKernelApp.exec_files=[]" in empty


def test_env_is_built_from_nothing_but_what_the_kernel_needs() -> None:
    command = KernelCommand("/opt/env/bin/python", extra_env={"MPLBACKEND": "Agg", "X": "1"})
    env = command.env(home="/tmp/home", mplconfig="/tmp/mpl")
    assert env == {
        "PATH": "/opt/env/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp/home",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "Agg",  # extra_env wins
        "MPLCONFIGDIR": "/tmp/mpl",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
        "X": "1",
    }
    default = KernelCommand("/opt/env/bin/python").env("/h", "/m")
    assert default["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"


def test_startup_files_are_the_public_scripts_of_the_startup_dir_in_order() -> None:
    files = startup_files()
    expected = sorted(
        str(p) for p in STARTUP_DIR.iterdir() if p.suffix == ".py" and not p.name.startswith("_")
    )
    assert files == expected and [Path(f).name for f in files][:2] == ["00_kss.py", "01_outputs.py"]
    assert all(Path(f).is_absolute() and Path(f).is_file() for f in files)


def test_the_kernel_python_and_its_matplotlib_cache(tmp_path: Path) -> None:
    venv_python = REPO / ".kernel-venv" / "bin" / "python"
    assert default_kernel_python() == (str(venv_python) if venv_python.exists() else sys.executable)
    python = tmp_path / "env" / "bin" / "python"
    assert mpl_config_dir(str(python)).endswith("/kss-mplconfig")  # nothing prebuilt
    (tmp_path / "env" / "mplconfig").mkdir(parents=True)
    assert mpl_config_dir(str(python)) == str(tmp_path / "env" / "mplconfig")


def test_ensure_private_dir(tmp_path: Path) -> None:
    path = ensure_private_dir(tmp_path / "a" / "b")
    assert path.is_dir() and stat.S_IMODE(path.stat().st_mode) == 0o700
    os.chmod(path, 0o755)
    assert stat.S_IMODE(ensure_private_dir(path).stat().st_mode) == 0o700


# -- process trees ----------------------------------------------------------------------------


@contextlib.contextmanager
def started(script: str) -> Iterator[subprocess.Popen[bytes]]:
    """`sh -c script` in a session of its own; everything in it killed and reaped on exit."""
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def psutil_tree(pid: int) -> set[int]:
    return {pid} | {p.pid for p in psutil.Process(pid).children(recursive=True)}


async def test_descendants_are_children_and_grandchildren() -> None:
    with started("sleep 60 & (sleep 60 & sleep 60 & wait) & wait") as proc:
        await until(lambda: len(descendants(proc.pid)) == 5)
        tree = descendants(proc.pid)
        assert proc.pid in tree and tree == psutil_tree(proc.pid)
    assert descendants(proc.pid) == {proc.pid}  # gone: only the pid asked about


async def test_a_double_forked_process_leaves_the_tree(tmp_path: Path) -> None:
    pidfile = tmp_path / "orphan.pid"
    script = f"sh -c 'sleep 60 & echo $! > {pidfile}'; exec sleep 60"
    with started(script) as proc:
        orphan = int(await until(lambda: pidfile.exists() and pidfile.read_text().strip()))
        await until(lambda: len(descendants(proc.pid)) == 1)  # its parent shell has exited
        try:
            assert not is_zombie(orphan)  # alive, adopted elsewhere: out of reach of the tree
            assert orphan not in descendants(proc.pid)
        finally:
            os.kill(orphan, signal.SIGKILL)  # the session's killpg would get it too


async def test_is_zombie_running_exited_and_gone() -> None:
    with started("exec sleep 60") as running:
        assert not is_zombie(running.pid)
    with started("exit 3") as done:
        await until(lambda: is_zombie(done.pid))  # exited, not reaped yet
    assert done.returncode == 3 and is_zombie(done.pid)  # reaped: gone counts as dead


BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


async def test_cpu_seconds_counts_own_and_reaped_childrens_time() -> None:
    burner = f"{sys.executable} -c '{BURN}time.sleep(60)'"
    with started(f"exec {burner}") as own, started("exec sleep 60") as idle:
        await until(lambda: cpu_seconds({own.pid}) >= 0.3, timeout=30)
        assert cpu_seconds({idle.pid}) < 0.1
        both = cpu_seconds({own.pid, idle.pid})
        assert both >= 0.3
    reaped = f"{sys.executable} -c '{BURN}'"
    with started(f"{reaped}; exec sleep 60") as parent:  # the child ends and is waited for
        await until(lambda: cpu_seconds({parent.pid}) >= 0.3, timeout=30)
    assert cpu_seconds(set()) == 0 and cpu_seconds({parent.pid}) == 0  # gone: nothing


class Tree:
    """The one part of the `Launcher` protocol `stop_processes` uses: the processes of the
    kernel, here everything below `root`."""

    def __init__(self, root: int) -> None:
        self.root = root

    def processes(self, slot: KernelSlot) -> set[int]:
        return descendants(self.root)


SLOT = KernelSlot("k", Path("/nonexistent"), Path("/nonexistent/c.json"), "/nonexistent/s")


async def test_stop_processes_stops_everything_but_what_it_keeps() -> None:
    script = "for i in 1 2 3 4 5; do sleep 60 & (sleep 60 & sleep 60 & wait) & done; exec sleep 60"
    with started(script) as proc:
        await until(lambda: len(descendants(proc.pid)) == 1 + 5 * 4)
        extra = descendants(proc.pid) - {proc.pid}
        assert await stop_processes(Tree(proc.pid), SLOT, keep={proc.pid}) == len(extra)
        assert all(is_zombie(pid) for pid in extra)
        assert proc.poll() is None and not is_zombie(proc.pid)  # kept
        assert await stop_processes(Tree(proc.pid), SLOT, keep={proc.pid}) == 0


STORM = textwrap.dedent(
    """
    import os, time
    for _ in range(300):  # bounded: a test must not outlive its own storm
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    time.sleep(60)
    """
)


async def test_stop_processes_catches_a_process_that_keeps_forking(tmp_path: Path) -> None:
    (tmp_path / "storm.py").write_text(STORM)
    with started(f"{sys.executable} {tmp_path / 'storm.py'} & exec sleep 60") as proc:
        await until(lambda: len(descendants(proc.pid)) > 20)  # the storm is under way
        killed = await stop_processes(Tree(proc.pid), SLOT, keep={proc.pid})
        assert killed > 20
        left = descendants(proc.pid) - {proc.pid}
        assert all(is_zombie(pid) for pid in left), [p for p in left if not is_zombie(p)]


# -- the LocalLauncher, with a real kernel ------------------------------------------------------


def proc_strings(pid: int, name: str) -> list[str]:
    """/proc/<pid>/<name> (environ, cmdline): NUL-separated strings."""
    raw = Path(f"/proc/{pid}/{name}").read_bytes()
    return [item for item in raw.decode().split("\0") if item]


async def test_a_local_kernel_runs_in_a_session_of_its_own(kernel: Kernel) -> None:
    launcher, slot = kernel.launcher, kernel.slot
    assert isinstance(launcher, LocalLauncher)
    assert (launcher.mode, launcher.runtime_view) == ("off", None)
    pid = kernel.pid
    assert pid is not None and os.getsid(pid) == pid  # killpg reaches all it starts
    assert launcher.processes(slot) == descendants(pid) and pid in launcher.processes(slot)
    assert launcher.process_limit_hits(slot) == 0
    env = dict(item.split("=", 1) for item in proc_strings(pid, "environ"))
    assert env["JPY_PARENT_PID"] == str(os.getpid())  # it exits when the server is gone
    assert env["HOME"] == str(slot.runtime_dir / "home")
    assert os.readlink(f"/proc/{pid}/cwd") == str(slot.runtime_dir / "home")
    assert str(slot.connection_file) in proc_strings(pid, "cmdline")
    assert slot.log_file.exists()


async def test_claim_hands_the_work_dir_itself_to_the_kernel(
    kernel: Kernel, tmp_path: Path
) -> None:
    path = await kernel.launcher.claim(kernel.slot, tmp_path)
    assert path == str(tmp_path)  # the kernel chdirs there: no mount, no copy


async def test_stop_processes_stops_what_an_execution_left_running(kernel: Kernel) -> None:
    started_here = await execute(
        kernel, "import subprocess\nleft = subprocess.Popen(['sleep', '60'])\nprint(left.pid)"
    )
    stray = int(started_here.stdout)
    assert stray in kernel.launcher.processes(kernel.slot)
    own = kernel.own_processes
    assert kernel.pid in own and stray not in own
    assert await stop_processes(kernel.launcher, kernel.slot, own) == 1
    assert is_zombie(stray)
    assert (await execute(kernel, "left.wait()")).result == str(-signal.SIGKILL)
    assert kernel.alive


async def test_release_forgets_the_kernels_processes(tmp_path: Path) -> None:
    kernel = await start_local_kernel(tmp_path / "run")
    launcher, slot, pid = kernel.launcher, kernel.slot, kernel.pid
    assert launcher.processes(slot)
    await kernel.stop()  # ends the process, then releases it
    assert launcher.processes(slot) == set()
    await launcher.release(slot)  # twice is harmless
    assert not psutil.pid_exists(pid) or is_zombie(pid)  # type: ignore[arg-type]
