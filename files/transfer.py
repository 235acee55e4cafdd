"""Moving bytes in and out of a file area: `Upload` (streamed, quota-checked, atomic) and
`Download` (one complete version of a file). `FileArea` creates both; see files/area.py.

An upload is received into the server's staging dir (under the data dir, on the same file
system as the work dirs, never visible to a kernel) and renamed into place on commit, so a
reader in the kernel sees the old file or the new one, and a crash mid-upload leaves its
bytes only in the staging dir, which is wiped at start. A download is served from a private
copy taken while the file held still (see `copy_version`), so a kernel rewriting
the file cannot tear it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import mimetypes
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from files.errors import BadFileName, FileAreaPurged, FileTooLarge, QuotaExceeded
from files.paths import (
    TEMP_PREFIX,
    give_to_owner,
    open_dirs,
    open_file,
    stamp_of,
    validate_name,
)
from files.pool import Lane

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MB = 1024 * 1024
MEMORY_COPY_BYTES = MB  # downloads up to this size are copied into memory, larger to disk
# A file changed less than this before a copy began may carry the same timestamp as the
# version copied (file times come from a clock that ticks every few ms), so a stamp that
# did not move proves nothing: such a copy is retried after a pause. The margin also covers
# a writer descheduled in the middle of a write (its mtime is set as the write begins).
RACY_NS = 50_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Ledger:
    """The uploads in flight into one user's area: their bytes, so that concurrent uploads
    share one quota and code is held to it too, and the uploads themselves, so that a purge
    can end them. One per (tenant, user) per process; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        self._uploads: dict[int, Upload] = {}
        self.generation = 0  # a purge starts a new one: older uploads are over

    def add(self, upload: Upload) -> int:
        with self._lock:
            self._sizes[id(upload)] = 0
            self._uploads[id(upload)] = upload
            return self.generation

    def set(self, upload: Upload, size: int) -> None:
        with self._lock:
            if id(upload) in self._sizes:
                self._sizes[id(upload)] = size

    def remove(self, upload: Upload) -> None:
        with self._lock:
            self._sizes.pop(id(upload), None)
            self._uploads.pop(id(upload), None)

    def total(self, upload: Upload | None = None, size: int = 0) -> int:
        """Bytes in flight, counting `upload` as `size` bytes when given."""
        with self._lock:
            sizes = dict(self._sizes)
        if upload is not None:
            sizes[id(upload)] = size
        return sum(sizes.values())

    def purge(self) -> list[Upload]:
        """Start a new generation; the uploads of the old one, to abort."""
        with self._lock:
            self.generation += 1
            return list(self._uploads.values())


class Upload:
    """A file being received into the staging dir; `commit()` moves it over the target in
    one step. Use as a context manager (or call `abort()`): leaving without commit deletes
    the staged bytes. `awrite`/`discard` are for asyncio callers: they run in the owner's
    lane of the file pool, so never concurrently with the owner's other file work."""

    def __init__(
        self,
        *,
        root: Path,
        name: str,
        parent_fd: int,
        staging: Path,
        max_file_bytes: int,
        quota: int,
        base_usage: int,
        ledger: Ledger,
        lane: Lane,
    ) -> None:
        self.name = name
        self.written = 0
        self._root = root
        self._dirs = name.split("/")[:-1]
        self._leaf = name.rsplit("/", 1)[-1]
        self._parent_fd = parent_fd
        self._max_file_bytes = max_file_bytes
        self._quota = quota
        self._base_usage = base_usage
        self._ledger = ledger
        self._lane = lane
        self._temp = f"{secrets.token_hex(12)}.part"
        self._hash = hashlib.sha256()
        self._renamed = False
        self._staging_fd = os.open(staging, _DIR_FLAGS)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            self._fd: int | None = os.open(self._temp, flags, 0o600, dir_fd=self._staging_fd)
        except BaseException:
            os.close(self._staging_fd)
            raise
        self._generation = ledger.add(self)

    def write(self, chunk: bytes) -> None:
        """Append `chunk`; a limit breach deletes the staged bytes and raises
        FileTooLarge or QuotaExceeded before anything is written past the limit."""
        self._check_live()
        if self._fd is None:
            raise RuntimeError(f"upload of {self.name!r} is already finished")
        size = self.written + len(chunk)
        if size > self._max_file_bytes:
            self.abort()
            raise FileTooLarge(
                f"{self.name!r} is larger than the file size limit of {self._max_file_bytes} bytes"
            )
        if self._base_usage + self._ledger.total(self, size) > self._quota:
            self.abort()
            raise QuotaExceeded(
                f"uploading {self.name!r} would exceed the quota of {self._quota} bytes"
            )
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self._hash.update(chunk)
        self.written = size
        self._ledger.set(self, size)

    async def awrite(self, chunk: bytes) -> None:
        await self._lane.run(self.write, chunk)

    def commit(self) -> tuple[os.stat_result, str]:
        """fsync, then atomically replace the target; the new file's stat and sha256."""
        self._check_live()
        if self._fd is None:
            raise RuntimeError(f"upload of {self.name!r} is already finished")
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
            os.fchmod(fd, 0o644)
            give_to_owner(self._root, fd)
            st = os.fstat(fd)  # before the rename: the kernel may touch it right after
        finally:
            os.close(fd)
        try:
            st = self._move_into_place(st)
            self._renamed = True
            os.fsync(self._parent_fd)
        finally:
            self._release()
        log.info("received %s (%d bytes) into %s", self.name, st.st_size, self._root)
        return st, self._hash.hexdigest()

    def abort(self) -> None:
        """Drop the upload and its staged bytes; harmless after commit or a second time."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._release()

    def discard(self) -> None:
        """`abort()` in the owner's lane: for callbacks that may run while a job of this
        upload is still under way (a closed connection)."""
        self._lane.submit(self.abort)

    def _check_live(self) -> None:
        if self._ledger.generation != self._generation:
            self.abort()
            raise FileAreaPurged(
                f"the user's files were purged while {self.name!r} was being uploaded"
            )

    def _move_into_place(self, st: os.stat_result) -> os.stat_result:
        try:
            return self._rename() or st
        except FileNotFoundError:
            # The target's directory was removed meanwhile (by the kernel, or expiry of an
            # empty directory): walk to it again, safely, and make it anew.
            old, self._parent_fd = self._parent_fd, open_dirs(self._root, self._dirs, create=True)
            os.close(old)
            return self._rename() or st

    def _rename(self) -> os.stat_result | None:
        """Rename the staged file over the target; the new file's stat if it was copied."""
        try:
            os.replace(
                self._temp, self._leaf, src_dir_fd=self._staging_fd, dst_dir_fd=self._parent_fd
            )
            return None
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise BadFileName(f"{self.name!r} is a directory") from None
            if exc.errno == errno.EXDEV:
                return self._copy_into_place()
            raise

    def _copy_into_place(self) -> os.stat_result:
        """The staging dir is on another file system (the admin mounted one): copy into a
        temp beside the target, then rename that."""
        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        src = os.open(self._temp, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._staging_fd)
        try:
            dst = os.open(temp, flags, 0o644, dir_fd=self._parent_fd)
            try:
                copy_fd(src, dst)
                os.fsync(dst)
                give_to_owner(self._root, dst)
                st = os.fstat(dst)
            finally:
                os.close(dst)
            os.replace(temp, self._leaf, src_dir_fd=self._parent_fd, dst_dir_fd=self._parent_fd)
            return st
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self._parent_fd)
            raise
        finally:
            os.close(src)

    def _release(self) -> None:
        if self._parent_fd < 0:
            return
        if not self._renamed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp, dir_fd=self._staging_fd)
        os.close(self._parent_fd)
        os.close(self._staging_fd)
        self._parent_fd = self._staging_fd = -1
        self._ledger.remove(self)

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


@dataclass
class Download:
    """One complete version of a file, held privately: `data` in memory (small files), or
    `fd`, an unlinked copy in the staging dir. Close it (or use `with`) when done."""

    name: str
    size: int
    mime_type: str
    modified: float
    etag: str
    lane: Lane
    data: bytes | None = None
    fd: int = -1
    _offset: int = field(default=0, repr=False)

    def read(self, n: int = CHUNK) -> bytes:
        """The next `n` bytes (blocking)."""
        if self.data is not None:
            chunk = self.data[self._offset : self._offset + n]
        else:
            chunk = os.pread(self.fd, min(n, self.size - self._offset), self._offset)
        self._offset += len(chunk)
        return chunk

    async def chunks(self, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The whole version, `size` bytes; reads of a copy on disk run in the owner's lane."""
        while self._offset < self.size:
            if self.data is not None:
                chunk = self.read(chunk_size)
            else:
                chunk = await self.lane.run(self.read, chunk_size)
            if not chunk:
                raise OSError(errno.EIO, f"the private copy of {self.name!r} ended early")
            yield chunk

    def close(self) -> None:
        """Release the copy; in the lane, after a read that may still be under way."""
        if self.fd >= 0:
            self.lane.submit(os.close, self.fd)
            self.fd = -1
        self.data = None

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_version(root: Path, name: str, staging: Path, lane: Lane) -> Download | None:
    """A private copy of the file `name` if it held still while copied, else None (try
    again after a pause). Held still: the same stamp before and after the copy, and no
    change for RACY_NS before it began (else a change during the copy could keep the
    stamp). A missing file is FileNotFound."""
    validate_name(name)
    began = time.time_ns()
    fd, st = open_file(root, name)
    copy_fd, data = -1, None
    try:
        if st.st_size <= MEMORY_COPY_BYTES:
            data = _read_all(fd, st.st_size + 1)
            size = len(data)
        else:
            copy_fd = private_copy(staging, fd)
            size = os.lseek(copy_fd, 0, os.SEEK_END)
        after = os.fstat(fd)
    except BaseException:
        if copy_fd >= 0:
            os.close(copy_fd)
        raise
    finally:
        os.close(fd)
    held_still = stamp_of(after) == stamp_of(st) and size == st.st_size
    if not held_still or st.st_mtime_ns >= began - RACY_NS:
        if copy_fd >= 0:
            os.close(copy_fd)
        return None
    mime, _ = mimetypes.guess_type(name.rsplit("/", 1)[-1], strict=False)
    return Download(
        name=name,
        size=size,
        mime_type=mime or "application/octet-stream",
        modified=st.st_mtime,
        etag='"{:x}-{:x}-{:x}"'.format(*stamp_of(st)),
        lane=lane,
        data=data,
        fd=copy_fd,
    )


def _read_all(fd: int, limit: int) -> bytes:
    parts, left = [], limit
    while left > 0 and (chunk := os.read(fd, min(left, MB))):
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def private_file(staging: Path) -> int:
    """An fd of an empty file that no one else can open: an O_TMPFILE in the staging dir,
    or a named temp unlinked at once where unsupported. Gone when the fd is closed."""
    try:
        return os.open(staging, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    path = staging / f"download-{secrets.token_hex(12)}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.unlink(path)
    return fd


def private_copy(staging: Path, src: int) -> int:
    """An fd of a private copy of `src` (from its current offset): see `private_file`."""
    fd = private_file(staging)
    try:
        copy_fd(src, fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def copy_fd(src: int, dst: int) -> int:
    """Copy from `src` to `dst` at their offsets until `src` ends; the bytes copied.
    In the kernel where it can (`copy_file_range`), else through a buffer."""
    copied = 0
    try:
        while n := os.copy_file_range(src, dst, 1 << 30):
            copied += n
        return copied
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        copied += len(chunk)
    return copied
