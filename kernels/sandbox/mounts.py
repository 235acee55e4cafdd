"""Bind mounts through which a claimed user's work dir reaches an already running sandbox.

The sandbox binds an empty per-kernel "slot" dir at `/mnt/data` when it starts. The slot
dirs live under a shared mount, and bubblewrap makes its copies slaves of it, so binding a
work dir onto the slot on the host later shows up inside the sandbox (root mode). Without
root, the same happens one level down: each sandbox runs inside its own user+mount
namespace owned by the server's user, and the bind is made there through `nsenter`.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(result: int, what: str, path: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def mount(source: str | None, target: str, flags: int, fstype: str | None = None) -> None:
    src = source.encode() if source else None
    fs = fstype.encode() if fstype else None
    _check(_libc.mount(src, target.encode(), fs, flags, None), "mount", target)


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), "umount", target)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root` in this mount namespace, deepest first."""
    prefix = str(root)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def make_shared_root(path: Path) -> None:
    """Make `path` a mount point of its own, shared, so binds below it propagate."""
    if str(path) not in mounts_under(path):
        mount(str(path), str(path), MS_BIND)
    mount(None, str(path), MS_SHARED | MS_REC)


def bind_host(source: Path, slot: Path, stage: Path, readonly: bool = False) -> None:
    """Root mode: bind `source` onto `slot` (nosuid, nodev, and read-only if asked),
    replacing an earlier bind.

    Mount flags do not propagate on remount, so the flags are set on a private staging
    mount (`stage`, outside the shared tree) first; the bind onto `slot` copies them.
    """
    unbind_host(slot)
    stage.mkdir(mode=0o700, exist_ok=True)
    mount(str(source), str(stage), MS_BIND)
    try:
        mount(None, str(stage), MS_PRIVATE)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if readonly else 0)
        mount(None, str(stage), flags)
        mount(str(stage), str(slot), MS_BIND)
    finally:
        unbind_host(stage)
        stage.rmdir()


def unbind_host(slot: Path) -> None:
    """Detach every mount stacked on `slot` (host namespace)."""
    while str(slot) in mounts_under(slot):
        umount(str(slot))


async def bind_in_namespace(pid: int, source: Path, slot: Path, readonly: bool = False) -> None:
    """User mode: bind `source` onto `slot` inside the user+mount namespace of `pid`."""
    nsenter = ["nsenter", "-t", str(pid), "-U", "-m", "--preserve-credentials", "--"]
    options = "remount,bind,nosuid,nodev" + (",ro" if readonly else "")
    steps = [
        ["mount", "--bind", str(source), str(slot)],
        ["mount", "-o", options, str(slot)],
    ]
    for step in steps:
        proc = await asyncio.create_subprocess_exec(
            *nsenter,
            *step,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            raise OSError(f"{' '.join(step)} in namespace of {pid}: {err.decode().strip()}")
