"""Safe paths inside a work dir the kernel's code shares with us.

Untrusted code can create symlinks and swap directories at any moment, so nothing here
resolves a user-controlled path as a whole: names are checked lexically (`validate_name`),
then walked one component at a time with directory fds and `O_NOFOLLOW`, and trees are
scanned with `os.fwalk`, which never follows symlinks.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import unicodedata
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

MAX_NAME_BYTES = 255
TEMP_PREFIX = ".kss-upload-"
# Bounds on walking a directory the user's code controls.
MAX_DEPTH = 16
MAX_ENTRIES = 20_000

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Stamp = tuple[int, int, int]


class FileAreaError(Exception):
    """Base of the file area's domain errors; `code` is a stable machine-readable name."""

    code = "file_error"


class BadFileName(FileAreaError):
    code = "bad_file_name"


class FileNotFound(FileAreaError):
    code = "file_not_found"


class FileExpired(FileNotFound):
    code = "file_expired"


class FileTooLarge(FileAreaError):
    code = "file_too_large"


class QuotaExceeded(FileAreaError):
    code = "quota_exceeded"


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


def scan(root: Path, *, visible_only: bool) -> Iterator[tuple[str, os.stat_result]]:
    """(relative name, lstat) of the regular files under root, never following symlinks.

    Upload temp files are always skipped; `visible_only` also skips hidden files and
    directories (.ipynb_checkpoints, ...) and names `validate_name` would refuse.
    """
    if not root.is_dir():
        return
    seen = 0
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root):
        rel = os.path.relpath(dirpath, root)
        depth = 0 if rel == "." else rel.count("/") + 1
        if depth >= MAX_DEPTH:
            dirnames[:] = []
        elif visible_only:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for entry in filenames:
            seen += 1
            if seen > MAX_ENTRIES:
                log.warning("%s holds more than %d files; scan cut short", root, MAX_ENTRIES)
                return
            if entry.startswith(TEMP_PREFIX) or (visible_only and entry.startswith(".")):
                continue
            try:
                st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            name = entry if rel == "." else f"{rel}/{entry}"
            if stat.S_ISREG(st.st_mode) and (not visible_only or is_valid_name(name)):
                yield name, st
