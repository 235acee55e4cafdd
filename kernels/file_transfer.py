"""Moving bytes in and out of a file area: `Upload` (streamed, quota-checked, atomic) and
`Download` (an open fd streamed in chunks). `FileArea` creates both; see kernels/files.py."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from kernels.file_paths import TEMP_PREFIX, BadFileName, FileTooLarge, QuotaExceeded, give_to_owner

if TYPE_CHECKING:
    from kernels.files import FileInfo

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


class Ledger:
    """Bytes of the uploads in flight into one work dir, so concurrent uploads share one
    quota, and their temp files, so expiry leaves them alone. One per dir per process."""

    _by_root: ClassVar[weakref.WeakValueDictionary[str, Ledger]] = weakref.WeakValueDictionary()
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def for_root(cls, root: Path) -> Ledger:
        key = os.path.abspath(root)
        with cls._registry_lock:
            ledger = cls._by_root.get(key)
            if ledger is None:
                ledger = cls._by_root[key] = cls()
            return ledger

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        self._temps: dict[int, str] = {}

    def add(self, token: int, temp_name: str) -> None:
        with self._lock:
            self._sizes[token] = 0
            self._temps[token] = temp_name

    def set(self, token: int, size: int) -> None:
        with self._lock:
            self._sizes[token] = size

    def remove(self, token: int) -> None:
        with self._lock:
            self._sizes.pop(token, None)
            self._temps.pop(token, None)

    def total(self, token: int | None = None, size: int = 0) -> int:
        """Bytes in flight, counting `token` as `size` bytes when given."""
        with self._lock:
            sizes = dict(self._sizes)
        if token is not None:
            sizes[token] = size
        return sum(sizes.values())

    def temps(self) -> set[str]:
        with self._lock:
            return set(self._temps.values())


class Upload:
    """A file being received: chunks go to a temp file beside the target, `commit()` renames
    it over the target in one step, so a reader sees the old file or the new one, never half.
    Use as a context manager (or call `abort()`): leaving without commit deletes the temp."""

    def __init__(
        self,
        *,
        root: Path,
        name: str,
        parent_fd: int,
        max_file_bytes: int,
        quota: int,
        base_usage: int,
        ledger: Ledger,
        on_commit: Callable[[str, os.stat_result, str], FileInfo],
    ) -> None:
        self.name = name
        self.written = 0
        self._root = root
        self._leaf = name.rsplit("/", 1)[-1]
        self._parent_fd = parent_fd
        self._max_file_bytes = max_file_bytes
        self._quota = quota
        self._base_usage = base_usage
        self._ledger = ledger
        self._on_commit = on_commit
        self._temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}.part"
        self._hash = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd: int | None = os.open(self._temp, flags, 0o644, dir_fd=parent_fd)
        self._renamed = False
        parent = name.rpartition("/")[0]
        ledger.add(id(self), f"{parent}/{self._temp}" if parent else self._temp)

    def write(self, chunk: bytes) -> None:
        """Append `chunk`; a limit breach deletes the temp file and raises
        FileTooLarge or QuotaExceeded before anything is written past the limit."""
        if self._fd is None:
            raise RuntimeError(f"upload of {self.name!r} is already finished")
        size = self.written + len(chunk)
        if size > self._max_file_bytes:
            self.abort()
            raise FileTooLarge(
                f"{self.name!r} is larger than the file size limit of {self._max_file_bytes} bytes"
            )
        if self._base_usage + self._ledger.total(id(self), size) > self._quota:
            self.abort()
            raise QuotaExceeded(
                f"uploading {self.name!r} would exceed the quota of {self._quota} bytes"
            )
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self._hash.update(chunk)
        self.written = size
        self._ledger.set(id(self), size)

    def commit(self) -> FileInfo:
        """fsync, then atomically replace the target; returns the new file's FileInfo."""
        if self._fd is None:
            raise RuntimeError(f"upload of {self.name!r} is already finished")
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
            give_to_owner(self._root, fd)
            st = os.fstat(fd)  # before the rename: the kernel may touch it right after
        finally:
            os.close(fd)
        pfd = self._parent_fd
        try:
            os.replace(self._temp, self._leaf, src_dir_fd=pfd, dst_dir_fd=pfd)
        except OSError as exc:
            self._release()
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise BadFileName(f"{self.name!r} is a directory") from None
            raise
        self._renamed = True
        try:
            os.fsync(pfd)
        finally:
            self._release()
        log.info("received %s (%d bytes) into %s", self.name, st.st_size, self._root)
        return self._on_commit(self.name, st, self._hash.hexdigest())

    async def acommit(self) -> FileInfo:
        return await asyncio.to_thread(self.commit)

    def abort(self) -> None:
        """Drop the upload and its temp file; harmless after commit or a second time."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._release()

    def _release(self) -> None:
        if self._parent_fd < 0:
            return
        if not self._renamed:
            try:
                os.unlink(self._temp, dir_fd=self._parent_fd)
            except FileNotFoundError:
                pass
        os.close(self._parent_fd)
        self._parent_fd = -1
        self._ledger.remove(id(self))

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


@dataclass
class Download:
    """An open regular file ready to stream; close it (or use `with`) when done."""

    name: str
    fd: int
    size: int
    mime_type: str
    modified: float
    etag: str

    def read(self, n: int = CHUNK) -> bytes:
        return os.read(self.fd, n)

    async def chunks(self, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The file's first `size` bytes (what Content-Length promised), read in a thread."""
        left = self.size
        while left > 0:
            data = await asyncio.to_thread(os.read, self.fd, min(chunk_size, left))
            if not data:
                return
            left -= len(data)
            yield data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
