"""One user's file area: the kernel's work directory seen from the host.

Both layers use it: the web layer uploads, lists, downloads and deletes; the session layer
snapshots the directory around an execution to announce what the code created or changed;
the janitor expires old files. It is plain blocking file-system code raising domain errors
(`BadFileName`, `FileNotFound`, `FileExpired`, `FileTooLarge`, `QuotaExceeded`); the `a*`
methods run the heavy parts in a thread for asyncio callers. No database is needed: what
the file system cannot tell (origin, cached sha256) lives in a small JSON sidecar.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from kernels.file_paths import (
    TEMP_PREFIX,
    BadFileName,
    FileAreaError,
    FileExpired,
    FileNotFound,
    FileTooLarge,
    QuotaExceeded,
    Stamp,
    open_dirs,
    open_file,
    scan,
    stamp_of,
    validate_name,
    walk,
)
from kernels.file_records import Records
from kernels.file_transfer import Download, Ledger, Upload

__all__ = [
    "BadFileName",
    "Download",
    "FileArea",
    "FileAreaError",
    "FileChange",
    "FileExpired",
    "FileInfo",
    "FileNotFound",
    "FileTooLarge",
    "QuotaExceeded",
    "Snapshot",
    "Upload",
    "validate_name",
]

log = logging.getLogger(__name__)

MB = 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 50 * MB
DEFAULT_QUOTA_BYTES = 500 * MB
DEFAULT_TTL_SECONDS = 48 * 3600

Origin = Literal["upload", "generated"]
Event = Literal["created", "modified"]
Snapshot = dict[str, Stamp]


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    modified: float
    expires_at: float
    origin: Origin
    sha256: str

    def as_dict(self) -> dict[str, object]:
        """JSON form for the API: times as ISO 8601 UTC."""
        return {
            "name": self.name,
            "size": self.size,
            "modified": _iso(self.modified),
            "expires_at": _iso(self.expires_at),
            "origin": self.origin,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class FileChange:
    name: str
    size: int
    event: Event


class FileArea:
    """The files of one (tenant, user); `root` is the host path of the kernel's work dir.

    Records live in `records_path`, by default `<root>.files.json` beside the work dir, out
    of the kernel's reach. Instances are cheap and may be created per request: the in-flight
    upload ledger and the records lock are shared per directory within the process.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        records_path: Path | str | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        quota: int = DEFAULT_QUOTA_BYTES,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        if records_path is None:
            records_path = self.root.with_name(self.root.name + ".files.json")
        self.records = Records(Path(records_path))
        self.max_file_bytes = max_file_bytes
        self.quota = quota
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.ledger = Ledger.for_root(self.root)

    def open_upload(self, name: str, expected_size: int | None = None) -> Upload:
        """Start receiving `name`; `expected_size` (a Content-Length) is checked up front."""
        validate_name(name)
        if expected_size is not None and expected_size > self.max_file_bytes:
            raise FileTooLarge(
                f"{name!r} is larger than the file size limit of {self.max_file_bytes} bytes"
            )
        base = self.usage(exclude=name)  # the file it replaces goes away on commit
        if expected_size is not None and base + self.ledger.total() + expected_size > self.quota:
            raise QuotaExceeded(f"uploading {name!r} would exceed the quota of {self.quota} bytes")
        dirs = name.split("/")[:-1]
        parent_fd = open_dirs(self.root, dirs, create=True)
        try:
            return Upload(
                root=self.root,
                name=name,
                parent_fd=parent_fd,
                max_file_bytes=self.max_file_bytes,
                quota=self.quota,
                base_usage=base,
                ledger=self.ledger,
                on_commit=self._committed,
            )
        except BaseException:
            os.close(parent_fd)
            raise

    def open_for_download(self, name: str) -> Download:
        """Open `name` without following any symlink; an expired file is FileExpired."""
        validate_name(name)
        try:
            fd, st = open_file(self.root, name)
        except FileNotFound:
            if self.records.expired_at(name) is not None:  # the janitor removed it
                raise FileExpired(
                    f"{name!r} has expired (files are kept {self._ttl_text()})"
                ) from None
            raise
        if self.clock() >= st.st_mtime + self.ttl_seconds:
            os.close(fd)
            raise FileExpired(f"{name!r} has expired (files are kept {self._ttl_text()})")
        mime, _ = mimetypes.guess_type(name.rsplit("/", 1)[-1], strict=False)
        return Download(
            name=name,
            fd=fd,
            size=st.st_size,
            mime_type=mime or "application/octet-stream",
            modified=st.st_mtime,
            etag='"{:x}-{:x}-{:x}"'.format(*stamp_of(st)),
        )

    def delete(self, name: str) -> None:
        """Remove the file `name` (a symlink is removed itself, never followed)."""
        validate_name(name)
        *dirs, leaf = name.split("/")
        parent_fd = open_dirs(self.root, dirs, create=False)
        try:
            if stat.S_ISDIR(os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                raise FileNotFound(f"{name!r} is a directory, not a file")
            os.unlink(leaf, dir_fd=parent_fd)
        except FileNotFoundError:
            raise FileNotFound(f"no file named {name!r}") from None
        finally:
            os.close(parent_fd)
        self.records.drop([name])
        log.info("deleted %s from %s", name, self.root)

    def info(self, name: str) -> FileInfo:
        """FileInfo of one file, hashing it if its hash is not cached."""
        validate_name(name)
        fd, st = open_file(self.root, name)
        os.close(fd)
        return self._describe(name, st)

    def list(self) -> list[FileInfo]:
        """Every visible regular file, sorted by name, hashing what is not cached yet."""
        entries = dict(scan(self.root, visible_only=True))
        self.records.prune(set(entries))
        return [self._describe(name, entries[name]) for name in sorted(entries)]

    def snapshot(self) -> Snapshot:
        """Stamps of every file (hidden ones too), to compare with after an execution."""
        return {name: stamp_of(st) for name, st in scan(self.root, visible_only=False)}

    def changes_since(self, before: Snapshot) -> list[FileChange]:
        """Visible files created or modified since `before`, sorted by name."""
        changes = []
        for name, st in sorted(scan(self.root, visible_only=True)):
            old = before.get(name)
            if old is None:
                changes.append(FileChange(name, st.st_size, "created"))
            elif old != stamp_of(st):
                changes.append(FileChange(name, st.st_size, "modified"))
        return changes

    def usage(self, exclude: str | None = None) -> int:
        """Bytes in regular files, hidden ones included, upload temp files not."""
        files = scan(self.root, visible_only=False, strict=True)
        return sum(st.st_size for name, st in files if name != exclude)

    def overrun(self, before: Snapshot) -> str | None:
        """Why the area is over its quota and still growing since `before`, else None.

        Code in the kernel can write past the quota that uploads are held to; the session
        polls this while an execution runs and stops one that keeps filling the disk.
        Shrinking an area that is over quota (deleting files) is never an overrun.
        """
        try:
            used = self.usage()
        except QuotaExceeded as exc:  # more entries than a scan may walk
            return str(exc)
        if used <= self.quota or used <= sum(stamp[1] for stamp in before.values()):
            return None
        return (
            f"the session's files take {used} bytes, over its quota of {self.quota} bytes; "
            "delete files to free space"
        )

    def expire(self, now: float | None = None) -> list[str]:
        """Delete everything not changed for the TTL (files, symlinks, stale upload temps,
        then empty directories) and its records; return the removed names, which
        downloads then report as expired for another TTL."""
        now = self.clock() if now is None else now
        cutoff = now - self.ttl_seconds
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        live_temps = self.ledger.temps()
        for rel, dirnames, filenames, dirfd in walk(self.root, topdown=False):
            for entry in [*filenames, *dirnames]:
                name = entry if rel == "." else f"{rel}/{entry}"
                try:
                    st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
                    if st.st_mtime > cutoff or name in live_temps:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        os.rmdir(entry, dir_fd=dirfd)  # fails, as wanted, unless empty
                        continue
                    os.unlink(entry, dir_fd=dirfd)
                except OSError:
                    continue
                if not entry.startswith(TEMP_PREFIX):
                    removed.append(name)
        self.records.mark_expired(removed, now, forget_before=cutoff)
        if removed:
            log.info("expired %d files in %s", len(removed), self.root)
        return sorted(removed)

    async def alist(self) -> list[FileInfo]:
        return await asyncio.to_thread(self.list)

    async def ainfo(self, name: str) -> FileInfo:
        return await asyncio.to_thread(self.info, name)

    async def asnapshot(self) -> Snapshot:
        return await asyncio.to_thread(self.snapshot)

    async def achanges_since(self, before: Snapshot) -> list[FileChange]:
        return await asyncio.to_thread(self.changes_since, before)

    async def aoverrun(self, before: Snapshot) -> str | None:
        return await asyncio.to_thread(self.overrun, before)

    async def aexpire(self, now: float | None = None) -> list[str]:
        return await asyncio.to_thread(self.expire, now)

    def _committed(self, name: str, st: os.stat_result, sha256: str) -> FileInfo:
        self.records.put(name, stamp_of(st), "upload", sha256)
        return self._info(name, st, "upload", sha256)

    def _describe(self, name: str, st: os.stat_result) -> FileInfo:
        # A record counts only while its stamp matches: the kernel rewriting an uploaded
        # file makes it "generated" and invalidates the cached hash.
        stamp = stamp_of(st)
        record = self.records.get(name)
        if record is not None and record.stamp == stamp:
            return self._info(name, st, record.origin, record.sha256)  # type: ignore[arg-type]
        sha256, stable = self._hash(name, stamp)
        if stable:  # else it changed while we read: report this hash, cache nothing
            self.records.put(name, stamp, "generated", sha256)
        return self._info(name, st, "generated", sha256)

    def _info(self, name: str, st: os.stat_result, origin: Origin, sha256: str) -> FileInfo:
        return FileInfo(
            name=name,
            size=st.st_size,
            modified=st.st_mtime,
            expires_at=st.st_mtime + self.ttl_seconds,
            origin=origin,
            sha256=sha256,
        )

    def _hash(self, name: str, stamp: Stamp) -> tuple[str, bool]:
        """sha256 of `name`, and whether it is the version `stamp` describes throughout."""
        digest = hashlib.sha256()
        fd, st = open_file(self.root, name)
        try:
            while chunk := os.read(fd, MB):
                digest.update(chunk)
            stable = stamp_of(st) == stamp == stamp_of(os.fstat(fd))
        finally:
            os.close(fd)
        return digest.hexdigest(), stable

    def _ttl_text(self) -> str:
        hours = self.ttl_seconds / 3600
        return f"{hours:g} hours after their last change"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
