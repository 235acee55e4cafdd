"""Kernels in bubblewrap: an own uid, cgroups, seccomp, mounts, no network.

`launcher.py` builds and starts the sandbox (`make_launcher` is the server's entry point);
`cgroups.py`, `seccomp.py`, `mounts.py` and `uids.py` are its parts.
"""

from .launcher import (
    SandboxLauncher,
    SandboxPolicy,
    SandboxUnavailable,
    check_sandbox_available,
    cleanup_leftovers,
    make_launcher,
    state_dir,
)

__all__ = [
    "SandboxLauncher",
    "SandboxPolicy",
    "SandboxUnavailable",
    "check_sandbox_available",
    "cleanup_leftovers",
    "make_launcher",
    "state_dir",
]
