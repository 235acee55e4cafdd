"""Safe paths inside a work dir the kernel's code shares with us.

Untrusted code can create symlinks and swap directories at any moment, so nothing here
resolves a user-controlled path as a whole: names are checked lexically (`validate_name`),
then walked one component at a time with directory fds and `O_NOFOLLOW`, and trees are
walked by `walk`, which never follows symlinks and, unlike `os.fwalk`, neither recurses nor
holds more than a bounded number of fds however deep the kernel nests directories.

Every scan also strips setuid/setgid bits from what it passes (`strip_setid`): a work dir
lives on the host, and a setuid file the kernel made there must not keep the bit.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadFileName, FileAreaError, FileNotFound, QuotaExceeded

log = logging.getLogger(__name__)

MAX_NAME_BYTES = 255
TEMP_PREFIX = ".kss-upload-"  # only for an upload copied in when staging is on another fs
# Bounds on walking a directory the user's code controls. A valid name has at most 128
# components, so every file a name can reach lies within MAX_DEPTH directories.
MAX_DEPTH = MAX_NAME_BYTES // 2
MAX_ENTRIES = 20_000

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Stamp = tuple[int, int, int]


def validate_name(name: str) -> str:
    """Return `name` if it is a safe relative path inside a work dir, else raise BadFileName."""
    if not isinstance(name, str) or not name:
        raise BadFileName("file name is empty")
    if "\x00" in name:
        raise BadFileName("file name contains a NUL byte")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise BadFileName("file name contains control characters")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadFileName("file name is not valid Unicode") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise BadFileName(f"file name is longer than {MAX_NAME_BYTES} bytes")
    if name.startswith("/"):
        raise BadFileName("file name must be relative, not an absolute path")
    if "\\" in name:
        raise BadFileName("file name must use '/' between directories, not '\\'")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise BadFileName(f"file name {name!r} has an empty, '.' or '..' component")
        if part.startswith("."):
            raise BadFileName(f"file name {name!r}: names starting with '.' are reserved")
    return name


def is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except BadFileName:
        return False
    return True


def stamp_of(st: os.stat_result) -> Stamp:
    """What identifies one version of a file: a rewrite or a replace changes it."""
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def open_dirs(root: Path, dirs: list[str], *, create: bool) -> int:
    """An fd of root/dirs..., refusing a symlink at every step; the caller closes it."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFound("the file area is empty") from None
    for part in dirs:
        try:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    give_to_owner(root, sub)
                except FileExistsError:
                    sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            else:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            error = walk_error(exc, "/".join(dirs), fd, part)
            os.close(fd)
            raise error from None
        os.close(fd)
        fd = sub
    return fd


def open_file(root: Path, name: str) -> tuple[int, os.stat_result]:
    """Open the regular file `name` read-only, never through a symlink."""
    *dirs, leaf = name.split("/")
    parent_fd = open_dirs(root, dirs, create=False)
    try:
        # O_NONBLOCK: the kernel could leave a FIFO under this name.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(leaf, flags, dir_fd=parent_fd)
    except OSError as exc:
        raise walk_error(exc, name, parent_fd, leaf) from None
    finally:
        os.close(parent_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileNotFound(f"no file named {name!r}")
    return fd, st


def walk_error(exc: OSError, name: str, dir_fd: int, part: str) -> FileAreaError:
    """The domain error for failing to open `part` inside `dir_fd`."""
    try:
        st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return FileNotFound(f"no file named {name!r}")
    if stat.S_ISLNK(st.st_mode):
        return BadFileName(f"{name!r} goes through a symbolic link, which is not followed")
    if exc.errno in (errno.ENOTDIR, errno.ENOENT):
        return FileNotFound(f"no file named {name!r}")
    return FileNotFound(f"cannot open {name!r}: {exc.strerror}")


def give_to_owner(root: Path, fd: int) -> None:
    """When running as root, hand a file we created to the work dir's owner (the kernel's
    uid), so the user's code can overwrite an uploaded file."""
    if os.geteuid() != 0:
        return
    owner = os.stat(root)
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
        os.fchown(fd, owner.st_uid, owner.st_gid)


@dataclass
class _Dir:
    rel: str
    fd: int
    dirnames: list[str] = field(default_factory=list)
    filenames: list[str] = field(default_factory=list)
    next: int = 0


def _open_dir(rel: str, fd: int, max_entries: int | None) -> _Dir:
    found = _Dir(rel, fd)
    with os.scandir(fd) as entries:
        for n, entry in enumerate(entries, 1):
            is_dir = entry.is_dir(follow_symlinks=False)
            (found.dirnames if is_dir else found.filenames).append(entry.name)
            if n == max_entries:
                break
    return found


def walk(
    root: Path,
    *,
    topdown: bool = True,
    max_depth: int = MAX_DEPTH,
    max_entries: int | None = None,
) -> Iterator[tuple[str, list[str], list[str], int]]:
    """Like `os.fwalk(root)`: (relative dir, dirnames, filenames, dir fd), never following
    symlinks. Iterative and at most `max_depth` levels down, so a tree nested thousands deep
    costs no recursion and at most `max_depth + 1` open fds. The fd is valid until the next
    step; top-down, pruning `dirnames` in place skips those directories. `max_entries`
    bounds what is read of one directory (the caller's bound on the whole walk)."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError:
        return
    try:
        stack = [_open_dir(".", fd, max_entries)]
    except OSError:
        os.close(fd)
        return
    try:
        if topdown:
            yield ".", stack[0].dirnames, stack[0].filenames, fd
        while stack:
            top = stack[-1]
            if top.next < len(top.dirnames) and len(stack) <= max_depth:
                name = top.dirnames[top.next]
                top.next += 1
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=top.fd)
                except OSError:
                    continue
                try:
                    rel = name if top.rel == "." else f"{top.rel}/{name}"
                    child = _open_dir(rel, sub, max_entries)
                except OSError:
                    os.close(sub)
                    continue
                stack.append(child)
                if topdown:
                    yield child.rel, child.dirnames, child.filenames, child.fd
                continue
            if top.next < len(top.dirnames):
                log.debug(
                    "%s: %s... nests over %d levels deep; not walked", root, top.rel[:80], max_depth
                )
            stack.pop()
            try:
                if not topdown:
                    yield top.rel, top.dirnames, top.filenames, top.fd
            finally:
                os.close(top.fd)
    finally:
        for left in stack:
            os.close(left.fd)


def disk_bytes(st: os.stat_result) -> int:
    """What a file takes on disk for the quota: its size, or its blocks when more
    (preallocated space counts; a sparse file counts its whole size)."""
    return max(st.st_size, st.st_blocks * 512)


_SETID = stat.S_ISUID | stat.S_ISGID


def strip_setid(dir_fd: int, entry: str, st: os.stat_result) -> bool:
    """Clear setuid/setgid of the regular file `entry` (lstat `st`), fd-relative, never
    through a symlink: it is reopened with O_NOFOLLOW and changed only if fstat shows the
    same regular file. Whether it was."""
    try:
        fd = os.open(
            entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except PermissionError:  # no read bit (a kernel may chmod 06111): a path-only fd
        return _strip_by_path(dir_fd, entry, st)
    except OSError:
        return False  # gone or replaced since the lstat: the next scan sees what is there
    try:
        now = os.fstat(fd)
        if _same_file(now, st):
            os.fchmod(fd, stat.S_IMODE(now.st_mode) & ~_SETID)
            return True
    except OSError as exc:
        log.warning("could not strip setuid/setgid from %s: %s", entry, exc)
    finally:
        os.close(fd)
    return False


def _strip_by_path(dir_fd: int, entry: str, st: os.stat_result) -> bool:
    try:
        fd = os.open(entry, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        now = os.fstat(fd)
        if _same_file(now, st):  # fchmod refuses O_PATH fds; its /proc link is the inode
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(now.st_mode) & ~_SETID)
            return True
    except OSError as exc:
        log.warning("could not strip setuid/setgid from %s: %s", entry, exc)
    finally:
        os.close(fd)
    return False


def _same_file(now: os.stat_result, then: os.stat_result) -> bool:
    return stat.S_ISREG(now.st_mode) and (now.st_dev, now.st_ino) == (then.st_dev, then.st_ino)


def _strip_dir_setgid(dir_fd: int) -> bool:
    try:
        mode = os.fstat(dir_fd).st_mode
        if mode & _SETID:
            os.fchmod(dir_fd, stat.S_IMODE(mode) & ~_SETID)
            return True
    except OSError as exc:
        log.warning("could not strip setgid from a directory: %s", exc)
    return False


class Scan:
    """(relative name, lstat) of the regular files under root, never following symlinks;
    iterate it once.

    `visible_only` skips hidden files and directories (.ipynb_checkpoints, ...) and names
    `validate_name` would refuse. Past MAX_ENTRIES entries the scan stops and sets
    `truncated`, or with `strict` (quota checks, which must not under-count) raises
    QuotaExceeded. Setuid/setgid bits of what it walks are stripped on the way. A smaller
    `limit` bounds the work of a walk that may be given up (`truncated`, nothing logged).
    """

    def __init__(
        self, root: Path, *, visible_only: bool, strict: bool = False, limit: int = MAX_ENTRIES
    ) -> None:
        self.root = root
        self.visible_only = visible_only
        self.strict = strict
        self.limit = limit
        self.truncated = False
        self.seen = 0  # files and directories walked
        self.stripped = 0  # files and directories whose setuid/setgid bits it cleared

    def __iter__(self) -> Iterator[tuple[str, os.stat_result]]:
        try:
            yield from self._walk()
        finally:
            if self.stripped:
                log.info("cleared setuid/setgid of %d entries in %s", self.stripped, self.root)

    def _walk(self) -> Iterator[tuple[str, os.stat_result]]:
        if not self.root.is_dir():
            return
        for rel, dirnames, filenames, dirfd in walk(self.root, max_entries=self.limit + 1):
            self.stripped += _strip_dir_setgid(dirfd)
            if self.visible_only:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            self.seen += len(dirnames)
            for entry in filenames:
                self.seen += 1
                if self.seen > self.limit:
                    self._cut_short()
                    return
                if self.visible_only and entry.startswith("."):
                    continue
                try:
                    st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_mode & _SETID:
                    self.stripped += strip_setid(dirfd, entry, st)
                name = entry if rel == "." else f"{rel}/{entry}"
                if not self.visible_only or is_valid_name(name):
                    yield name, st
            if self.seen > self.limit:
                self._cut_short()
                return

    def _cut_short(self) -> None:
        if self.limit < MAX_ENTRIES:
            self.truncated = True  # the caller's bound, not the file area's
            return
        if self.strict:
            raise QuotaExceeded(
                f"the file area holds more than {MAX_ENTRIES} files and directories; "
                "delete some first"
            )
        self.truncated = True
        log.info("%s holds more than %d entries; scan cut short", self.root, MAX_ENTRIES)
