"""What a sandboxed kernel may use (`SandboxPolicy`, a part of the server's settings), and
the error that says the sandbox cannot run here."""

from __future__ import annotations

from dataclasses import dataclass, field


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
