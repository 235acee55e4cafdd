"""One user's file area: the kernel's work directory seen from the host.

Both layers use it: the web layer uploads, lists, downloads, deletes and purges; the session
layer snapshots the directory around an execution and checks its disk use while code runs;
the janitor expires old files.

The file-system work is plain blocking code (the methods without an `a`), raising domain
errors. asyncio callers use the `a*` methods: they run that work in the user's lane of the
server's fair file pool (files/pool.py), so that work proportional to one user's files
never holds up another user, and keep what the file system cannot tell (origin, cached
sha256, names expiry removed) in the store, one batch per call: a listing reads the records
of one page and writes back what it hashed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from files.errors import (
    BadFileName,
    FileAreaError,
    FileAreaPurged,
    FileBusy,
    FileExpired,
    FileNotFound,
    FileTooLarge,
    PurgeFailed,
    QuotaExceeded,
)
from files.listing import (
    LIST_LIMIT,
    MAX_LIST_LIMIT,
    FileInfo,
    FileRecord,
    FileRecordStore,
    Listing,
    describe,
    file_info,
    page,
    stat_file,
)
from files.paths import (
    MAX_ENTRIES,
    Scan,
    Stamp,
    disk_bytes,
    is_valid_name,
    open_dirs,
    stamp_of,
    validate_name,
    walk,
)
from files.pool import Lane
from files.transfer import Download, Ledger, Upload, copy_version

__all__ = [
    "LIST_LIMIT",
    "MAX_LIST_LIMIT",
    "BadFileName",
    "Download",
    "FileArea",
    "FileAreaError",
    "FileAreaPurged",
    "FileBusy",
    "FileChange",
    "FileExpired",
    "FileInfo",
    "FileLimits",
    "FileNotFound",
    "FileRecord",
    "FileRecordStore",
    "FileTooLarge",
    "Listing",
    "PurgeFailed",
    "QuotaExceeded",
    "Snapshot",
    "Upload",
    "validate_name",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DOWNLOAD_PAUSES = (0.01, 0.02, 0.04, 0.08, 0.1)  # between copies of a changing file; then busy
# The server's own hidden dir in a work dir, and in it where a hibernating kernel saves its
# variables (the kernel can write only in its work dir). Hidden names are in no listing, no
# `FILES` and no file event; expiry leaves the dir alone (the snapshot expires with the
# transcript), and the quota counts it like every byte of the work dir.
SERVER_DIR = ".kss"
HIBERNATION = "hibernate"
HIBERNATION_DIR = f"{SERVER_DIR}/{HIBERNATION}"
INLINE_ENTRIES = 64  # a work dir with fewer entries is walked on the event loop
MANIFEST = "manifest.json"  # written last by the kernel: a snapshot without one is cut short

Event = Literal["created", "modified"]


@dataclass(frozen=True)
class FileLimits:
    """What one user's file area may hold. Every field is a server option."""

    max_file_bytes: int = field(
        default=50_000_000,
        metadata={"option": "file_max_bytes", "help": "largest file one upload may create"},
    )
    quota: int = field(
        default=500_000_000,
        metadata={"option": "user_quota_bytes", "help": "bytes of files one user may keep"},
    )
    ttl_seconds: float = field(
        default=48 * 3600,
        metadata={
            "option": "file_ttl_seconds",
            "help": "seconds after its last change a file expires",
        },
    )


@dataclass(frozen=True)
class FileChange:
    name: str
    size: int
    event: Event


@dataclass(frozen=True)
class Snapshot:
    """A work dir before an execution: stamps of every file, and their bytes on disk."""

    stamps: dict[str, Stamp]
    used: int


class FileArea:
    """The files of one (tenant, user); `root` is the host path of the kernel's work dir."""

    def __init__(
        self,
        root: Path,
        *,
        tenant: str,
        user: str,
        staging: Path,
        store: FileRecordStore,
        lane: Lane,
        ledger: Ledger,
        limits: FileLimits = FileLimits(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.tenant = tenant
        self.user = user
        self.staging = staging
        self.store = store
        self.lane = lane
        self.ledger = ledger
        self._small = True  # the last walk found few entries: walk on the loop (asnapshot)
        self.max_file_bytes = limits.max_file_bytes
        self.quota = limits.quota
        self.ttl_seconds = limits.ttl_seconds
        self.clock = clock

    # -- uploads ---------------------------------------------------------------------------

    def open_upload(self, name: str, expected_size: int | None = None) -> Upload:
        """Start receiving `name`; `expected_size` (a Content-Length) is checked up front."""
        validate_name(name)
        if expected_size is not None and expected_size > self.max_file_bytes:
            raise FileTooLarge(
                f"{name!r} is larger than the file size limit of {self.max_file_bytes} bytes"
            )
        base = self._file_bytes(exclude=name)  # the file it replaces goes away on commit
        if expected_size is not None and base + self.ledger.total() + expected_size > self.quota:
            raise QuotaExceeded(f"uploading {name!r} would exceed the quota of {self.quota} bytes")
        parent_fd = open_dirs(self.root, name.split("/")[:-1], create=True)
        try:
            return Upload(
                root=self.root,
                name=name,
                parent_fd=parent_fd,
                staging=self.staging,
                max_file_bytes=self.max_file_bytes,
                quota=self.quota,
                base_usage=base,
                ledger=self.ledger,
                lane=self.lane,
            )
        except BaseException:
            os.close(parent_fd)
            raise

    async def aopen_upload(self, name: str, expected_size: int | None = None) -> Upload:
        return await self.lane.run(self.open_upload, name, expected_size)

    async def acommit(self, *uploads: Upload) -> list[FileInfo]:
        """Commit `uploads` in order (one job) and record them as uploads."""
        done, error = await self.lane.run(_commit_all, uploads)
        records = [FileRecord(u.name, stamp_of(st), "upload", sha) for u, st, sha in done]
        if records:
            await self.store.put_file_records(self.tenant, self.user, records)
        if error is not None:
            raise error
        return [file_info(u.name, st, "upload", sha, self.ttl_seconds) for u, st, sha in done]

    # -- downloads -------------------------------------------------------------------------

    def copy_version(self, name: str) -> Download | None:
        """A private copy of one version of `name`, or None when it did not hold still
        (see `file_transfer.copy_version`); an expired file is FileExpired."""
        download = copy_version(self.root, name, self.staging, self.lane)
        if download is not None and self.clock() >= download.modified + self.ttl_seconds:
            download.close()
            raise self._expired(name)
        return download

    def open_for_download(self, name: str) -> Download:
        """One complete version of `name` (blocking; waits out a file being rewritten a
        little, then FileBusy)."""
        for pause in (*DOWNLOAD_PAUSES, None):
            download = self.copy_version(name)
            if download is not None:
                return download
            if pause is not None:
                time.sleep(pause)
        raise self._busy(name)

    async def aopen_for_download(self, name: str) -> Download:
        """`open_for_download` for asyncio: copies in the lane, pauses on the loop, and
        names a file expiry removed as expired."""
        for pause in (*DOWNLOAD_PAUSES, None):
            try:
                download = await self.lane.run(self.copy_version, name)
            except FileExpired:
                raise
            except FileNotFound:
                when = await self.store.file_expired_at(self.tenant, self.user, name)
                if when is not None and when > self.clock() - self.ttl_seconds:
                    raise self._expired(name) from None
                raise
            if download is not None:
                return download
            if pause is not None:
                await asyncio.sleep(pause)
        raise self._busy(name)

    # -- deleting --------------------------------------------------------------------------

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
        log.info("deleted %s from %s", name, self.root)

    async def adelete(self, name: str) -> None:
        await self.lane.run(self.delete, name)
        await self.store.drop_file_records(self.tenant, self.user, [name])

    def purge(self) -> bool:
        """End the uploads in flight and remove the whole work dir, however deep (`rm`,
        which does not recurse, never crosses into a mount); whether there was one."""
        for upload in self.ledger.purge():
            upload.abort()
        if not os.path.lexists(self.root):
            return False
        done = subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", str(self.root)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if done.returncode != 0:
            log.error("could not remove %s: %s", self.root, done.stderr.decode(errors="replace"))
            raise PurgeFailed("the user's files could not all be removed")
        log.info("purged %s", self.root)
        return True

    async def apurge(self) -> bool:
        """Purge the files and their records; whether there was anything to purge. An
        upload in flight ends with FileAreaPurged."""
        existed = await self.lane.run(self.purge)
        dropped = await self.store.drop_file_records(self.tenant, self.user)
        return existed or dropped > 0

    # -- listing ---------------------------------------------------------------------------

    async def alist(self, after: str | None = None, limit: int = LIST_LIMIT) -> Listing:
        """One page of the listing: one bounded walk, one store read, and hashes of only
        the page's files the store has no valid hash of."""
        entries, next_name, truncated = await self.lane.run(page, self.root, after, limit)
        if not entries:
            return Listing([], None, truncated)
        t, u = self.tenant, self.user
        records = await self.store.file_records_in(t, u, after or "", entries[-1][0])
        listed = {name for name, _ in entries}
        # Records in the page's range but not in it are of deleted files, unless the walk
        # was cut short and never reached them.
        gone = [] if truncated else [name for name in records if name not in listed]
        infos, fresh, gone = await self.lane.run(
            describe, self.root, self.ttl_seconds, entries, records, gone
        )
        if fresh or gone:  # at once: in order with the records of later jobs of this lane
            await self.store.put_file_records(t, u, fresh, drop=gone)
        return Listing(infos, next_name, truncated)

    async def auploads(self) -> list[FileInfo]:
        """The uploaded files still as they were uploaded (their record's stamp), by name,
        with their sha256: from the store's records, checked against the file system."""
        records = await self.store.file_records_in(self.tenant, self.user, "", LAST_NAME)
        uploads = sorted((r for r in records.values() if r.origin == "upload"), key=_name)
        return await self.lane.run(_still_there, self.root, uploads, self.ttl_seconds)

    # -- around executions -----------------------------------------------------------------

    def snapshot(self, scan: Scan | None = None) -> Snapshot:
        """Stamps of every file (hidden ones too) and their bytes, to compare with later."""
        scan = scan or Scan(self.root, visible_only=False)
        stamps, used = {}, 0
        for name, st in scan:
            stamps[name] = stamp_of(st)
            used += disk_bytes(st)
        return Snapshot(stamps, used)

    def changes_since(self, before: Snapshot, scan: Scan | None = None) -> list[FileChange]:
        """Visible files created or modified since `before`, sorted by name. The walk
        covers hidden files too, to strip their setuid/setgid bits."""
        changes = []
        for name, st in sorted(scan or Scan(self.root, visible_only=False)):
            if not is_valid_name(name):
                continue
            old = before.stamps.get(name)
            if old is None:
                changes.append(FileChange(name, st.st_size, "created"))
            elif old != stamp_of(st):
                changes.append(FileChange(name, st.st_size, "modified"))
        return changes

    def usage(self) -> int:
        """Bytes the user holds: every regular file in the work dir whatever its name
        (blocks when more than its size), plus uploads in flight. QuotaExceeded when the
        work dir holds more than MAX_ENTRIES entries."""
        return self._file_bytes() + self.ledger.total()

    # Every execution walks its work dir twice, before and after. A small one (most are) is
    # walked on the event loop: ~35 us, where a hop to a file worker and back costs ~250 us
    # of the user's round trip. The walk gives up past INLINE_ENTRIES entries (so its cost
    # on the loop is bounded whatever the kernel wrote) and the file worker walks it instead;
    # after a walk that found the work dir large, the next goes to the worker directly.

    async def asnapshot(self) -> Snapshot:
        return await self._walk(self.snapshot)

    async def achanges_since(self, before: Snapshot) -> list[FileChange]:
        return await self._walk(self.changes_since, before)

    async def _walk(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args, scan)`: on the loop while the work dir is small, else on the worker."""
        if self._small:
            scan = Scan(self.root, visible_only=False, limit=INLINE_ENTRIES)
            found = fn(*args, scan)
            if not scan.truncated:
                return found
        scan = Scan(self.root, visible_only=False)
        found = await self.lane.run(fn, *args, scan)
        self._small = scan.seen < INLINE_ENTRIES
        return found

    async def ausage(self) -> int:
        return await self.lane.run(self.usage)

    # -- hibernation -----------------------------------------------------------------------

    def has_hibernation(self) -> bool:
        """Whether a complete snapshot of a kernel's variables is there (never through a
        symlink the kernel may have planted)."""
        try:
            fd = open_dirs(self.root, [SERVER_DIR, HIBERNATION], create=False)
        except FileAreaError:
            return False
        try:
            st = os.stat(MANIFEST, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return False
        finally:
            os.close(fd)
        return stat.S_ISREG(st.st_mode)

    def drop_hibernation(self) -> None:
        """Remove the snapshot, if any (fd-relative: a symlink is removed, never followed)."""
        try:
            fd = open_dirs(self.root, [SERVER_DIR], create=False)
        except FileAreaError:
            return
        try:
            st = os.stat(HIBERNATION, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(HIBERNATION, dir_fd=fd)  # fd-relative, symlinks not followed
            else:  # the kernel put something else there: a link or a file goes as such
                os.unlink(HIBERNATION, dir_fd=fd)
            log.info("removed the hibernated variables in %s", self.root)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    async def ahas_hibernation(self) -> bool:
        return await self.lane.run(self.has_hibernation)

    async def adrop_hibernation(self) -> None:
        await self.lane.run(self.drop_hibernation)

    # -- expiry ----------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> list[str]:
        """Delete everything not changed for the TTL (files, symlinks, then empty
        directories), visiting at most MAX_ENTRIES entries per call; the removed names."""
        now = self.clock() if now is None else now
        cutoff = now - self.ttl_seconds
        removed: list[str] = []
        seen = 0
        for rel, dirnames, filenames, dirfd in walk(
            self.root, topdown=False, max_entries=MAX_ENTRIES
        ):
            if rel == SERVER_DIR or rel.startswith(f"{SERVER_DIR}/"):
                continue  # the server's own: a snapshot expires with the transcript
            for entry in [*filenames, *dirnames]:
                name = entry if rel == "." else f"{rel}/{entry}"
                if name == SERVER_DIR:
                    continue
                try:
                    st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
                    if st.st_mtime > cutoff:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        os.rmdir(entry, dir_fd=dirfd)  # fails, as wanted, unless empty
                        continue
                    os.unlink(entry, dir_fd=dirfd)
                except OSError:
                    continue
                removed.append(name)
            seen += len(filenames) + len(dirnames)
            if seen > MAX_ENTRIES:
                log.info("%s: expiry stopped after %d entries", self.root, MAX_ENTRIES)
                break
        if removed:
            log.info("expired %d files in %s", len(removed), self.root)
        return sorted(removed)

    async def aexpire(self, now: float | None = None) -> list[str]:
        """`expire`, then remember the removed names as expired for another TTL."""
        now = self.clock() if now is None else now
        removed = await self.lane.run(self.expire, now)
        if removed:
            await self.store.mark_files_expired(
                self.tenant, self.user, removed, now, forget_before=now - self.ttl_seconds
            )
        return removed

    # -- internals -------------------------------------------------------------------------

    def _file_bytes(self, exclude: str | None = None) -> int:
        files = Scan(self.root, visible_only=False, strict=True)
        return sum(disk_bytes(st) for name, st in files if name != exclude)

    def _busy(self, name: str) -> FileBusy:
        waited = sum(DOWNLOAD_PAUSES)
        return FileBusy(f"{name!r} kept changing while it was read (for {waited:g} s); try again")

    def _expired(self, name: str) -> FileExpired:
        hours = self.ttl_seconds / 3600
        kept = f"files are kept {hours:g} hours after their last change"
        return FileExpired(f"{name!r} has expired ({kept})")


LAST_NAME = chr(0x10FFFF) * 64  # sorts after every valid name (at most 255 UTF-8 bytes)


def _name(record: FileRecord) -> str:
    return record.name


def _still_there(root: Path, records: list[FileRecord], ttl: float) -> list[FileInfo]:
    found = []
    for record in records:
        try:
            st = stat_file(root, record.name)
        except FileAreaError:
            continue
        if stamp_of(st) == record.stamp:
            found.append(file_info(record.name, st, record.origin, record.sha256, ttl))
    return found


def _commit_all(
    uploads: Sequence[Upload],
) -> tuple[list[tuple[Upload, os.stat_result, str]], FileAreaError | None]:
    """Commit in order, stopping at the first failure: what was committed, and the failure."""
    done = []
    for upload in uploads:
        try:
            st, sha256 = upload.commit()
        except FileAreaError as exc:
            return done, exc
        done.append((upload, st, sha256))
    return done, None
