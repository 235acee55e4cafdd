"""Host uids for sandboxed kernels: one free uid of a configured range per running kernel.

A uid is handed out only if no process runs as it and no other launcher on this machine
holds its lock file (an flock, so a crashed server's uids free themselves), so a kernel never
shares its uid (and with it signals and files) with another kernel or a leftover of a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR = Path("/run/kss-uids")


class NoFreeUid(RuntimeError):
    """Every uid of the range is taken by a running kernel or a stray process."""


def processes_by_uid(uids: range) -> dict[int, list[int]]:
    """Map each uid of `uids` that owns a process to those pids (real, effective or saved)."""
    found: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("State:") and line.split()[1] in "ZX":
                break  # zombies are gone in all but name
            if line.startswith("Uid:"):
                ids = {int(v) for v in line.split()[1:4]}
                for uid in ids:
                    if uid in uids:
                        found.setdefault(uid, []).append(int(entry.name))
                break
    return found


class UidPool:
    """Hands out uids round-robin, so a released uid is reused as late as possible."""

    def __init__(self, first: int, last: int, lock_dir: Path = LOCK_DIR) -> None:
        if first <= 0 or last < first:
            raise ValueError(f"bad kernel uid range {first}-{last}: must be 1 <= first <= last")
        if first < 1000:
            raise ValueError(f"kernel uid range {first}-{last} overlaps system accounts (< 1000)")
        self.range = range(first, last + 1)
        self.lock_dir = lock_dir
        self._in_use: dict[int, int] = {}  # uid -> fd holding its lock
        self._next = first

    def _lock(self, uid: int) -> int | None:
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def allocate(self) -> int:
        busy = processes_by_uid(self.range)
        for _ in range(len(self.range)):
            uid = self._next
            self._next = uid + 1 if uid + 1 in self.range else self.range.start
            if uid in self._in_use:
                continue
            if uid in busy:
                log.warning("kernel uid %d skipped: processes %s run as it", uid, busy[uid][:5])
                continue
            fd = self._lock(uid)
            if fd is None:  # another server on this machine holds it
                continue
            self._in_use[uid] = fd
            return uid
        raise NoFreeUid(f"all {len(self.range)} kernel uids {self.range.start}- are in use")

    def release(self, uid: int) -> None:
        fd = self._in_use.pop(uid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def in_use(self) -> int:
        return len(self._in_use)
