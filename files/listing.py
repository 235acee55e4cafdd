"""Listings of a file area, one page at a time, described from the store's records.

What the file system cannot tell about a file (uploaded or generated, its sha256) is a
`FileRecord` in the server's store, keyed by (tenant, user, name) and valid while the file
keeps the stamp it was recorded with: the kernel rewriting an uploaded file makes it
"generated" and invalidates the cached hash without anyone telling us. A page costs one
bounded walk of the work dir, one store read for the page's records, and hashes of only the
page's files those records do not cover: never work per file on the whole directory.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from files.errors import FileAreaError
from files.paths import Scan, Stamp, open_file, stamp_of

LIST_LIMIT, MAX_LIST_LIMIT = 1000, 5000  # files per listing page: default, most
MB = 1024 * 1024

Origin = Literal["upload", "generated"]
Entries = list[tuple[str, os.stat_result]]


@dataclass(frozen=True)
class FileRecord:
    """What the store keeps of one file: valid while the file still has this stamp."""

    name: str
    stamp: Stamp
    origin: Origin
    sha256: str


class FileRecordStore(Protocol):
    """The part of the server's store the file areas use (`transcript.store.base.Store`)."""

    async def file_records(
        self, tenant: str, user: str, names: Sequence[str]
    ) -> dict[str, FileRecord]:
        """The records of those of `names` that have one."""
        ...

    async def file_records_in(
        self, tenant: str, user: str, after: str, upto: str
    ) -> dict[str, FileRecord]:
        """Every record with after < name <= upto: one listing page's, and stale ones."""
        ...

    async def put_file_records(
        self, tenant: str, user: str, records: Sequence[FileRecord], drop: Sequence[str] = ()
    ) -> None:
        """In one transaction, forget `drop` and insert or replace `records` (which also
        forgets that their names expired)."""
        ...

    async def drop_file_records(
        self, tenant: str, user: str, names: Sequence[str] | None = None
    ) -> int:
        """Forget records and expiries of `names`, or all of the user's; how many rows."""
        ...

    async def mark_files_expired(
        self, tenant: str, user: str, names: Sequence[str], when: float, forget_before: float
    ) -> None:
        """Replace the records of `names` with "expired at `when`"; forget expiries older
        than `forget_before` (and all but the newest 10,000 of the user's)."""
        ...

    async def file_expired_at(self, tenant: str, user: str, name: str) -> float | None:
        """When expiry removed the file `name`, if it did and that is still remembered."""
        ...


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
class Listing:
    """One page of a listing; `next` is the `after` of the next page, None on the last.
    `truncated`: the work dir holds more entries than one walk visits (MAX_ENTRIES)."""

    files: list[FileInfo]
    next: str | None
    truncated: bool


def file_info(name: str, st: os.stat_result, origin: Origin, sha256: str, ttl: float) -> FileInfo:
    return FileInfo(
        name=name,
        size=st.st_size,
        modified=st.st_mtime,
        expires_at=st.st_mtime + ttl,
        origin=origin,
        sha256=sha256,
    )


def page(root: Path, after: str | None, limit: int) -> tuple[Entries, str | None, bool]:
    """Visible files (name, lstat) after `after`, at most `limit`, sorted by name; the
    next page's `after`; whether the walk was cut short."""
    scan = Scan(root, visible_only=True)
    entries = sorted(scan)
    start = bisect.bisect_right(entries, after, key=lambda e: e[0]) if after else 0
    chosen = entries[start : start + limit]
    more = start + limit < len(entries)
    return chosen, chosen[-1][0] if more else None, scan.truncated


def describe(
    root: Path,
    ttl: float,
    entries: Entries,
    records: dict[str, FileRecord],
    gone: Sequence[str] = (),
) -> tuple[list[FileInfo], list[FileRecord], list[str]]:
    """FileInfo of each entry still there, hashing those whose record does not match; the
    records to write; which of `gone` (names with records, not listed) really are gone."""
    infos, fresh = [], []
    for name, st in entries:
        stamp = stamp_of(st)
        record = records.get(name)
        if record is not None and record.stamp == stamp:
            infos.append(file_info(name, st, record.origin, record.sha256, ttl))
            continue
        try:
            sha256, stable = hash_file(root, name, stamp)
        except FileAreaError:  # gone, or replaced by something else, since the walk
            continue
        if stable:  # else it changed while we read: report this hash, cache nothing
            fresh.append(FileRecord(name, stamp, "generated", sha256))
        infos.append(file_info(name, st, "generated", sha256, ttl))
    return infos, fresh, [name for name in gone if not _exists(root, name)]


def hash_file(root: Path, name: str, stamp: Stamp) -> tuple[str, bool]:
    """sha256 of `name`, and whether it is the version `stamp` describes throughout."""
    digest = hashlib.sha256()
    fd, st = open_file(root, name)
    try:
        while chunk := os.read(fd, MB):
            digest.update(chunk)
        stable = stamp_of(st) == stamp == stamp_of(os.fstat(fd))
    finally:
        os.close(fd)
    return digest.hexdigest(), stable


def stat_file(root: Path, name: str) -> os.stat_result:
    fd, st = open_file(root, name)
    os.close(fd)
    return st


def _exists(root: Path, name: str) -> bool:
    try:
        stat_file(root, name)
    except FileAreaError:
        return False
    return True


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
