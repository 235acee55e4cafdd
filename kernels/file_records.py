"""What the file system cannot tell about a user's files: origin and cached sha256.

A small JSON sidecar per work dir, kept outside the directory the kernel can write. Each
record carries the stamp (mtime_ns, size, inode) of the file it describes; a record whose
stamp no longer matches the file is stale, so the kernel rewriting an uploaded file makes it
"generated" and invalidates the cached hash without anyone telling us.

It also remembers, for a while, which names expiry removed, so that asking for one of them
says it expired rather than that it never existed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]
MAX_EXPIRED = 10_000  # names remembered as expired, newest kept

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(os.path.abspath(path), threading.Lock())


@dataclass(frozen=True)
class Record:
    stamp: Stamp
    origin: str
    sha256: str


class Records:
    """Name -> Record, and name -> when it expired, persisted to one JSON file, safe across
    threads and instances."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = _lock_for(path)

    def get(self, name: str) -> Record | None:
        with self._lock:
            raw = self._load()["files"].get(name)
        if raw is None:
            return None
        return Record(tuple(raw["stamp"]), raw["origin"], raw["sha256"])  # type: ignore[arg-type]

    def put(self, name: str, stamp: Stamp, origin: str, sha256: str) -> None:
        with self._lock:
            data = self._load()
            data["files"][name] = {"stamp": list(stamp), "origin": origin, "sha256": sha256}
            data["expired"].pop(name, None)  # a file of that name exists again
            self._save(data)

    def drop(self, names: list[str]) -> None:
        with self._lock:
            data = self._load()
            changed = [data["files"].pop(n, None) is not None for n in names]
            changed += [data["expired"].pop(n, None) is not None for n in names]
            if any(changed):
                self._save(data)

    def prune(self, keep: set[str]) -> None:
        """Forget records of files that no longer exist, and expiry of names that do."""
        with self._lock:
            data = self._load()
            gone = [name for name in data["files"] if name not in keep]
            back = [name for name in data["expired"] if name in keep]
            for name in gone:
                del data["files"][name]
            for name in back:
                del data["expired"][name]
            if gone or back:
                self._save(data)

    def mark_expired(self, names: list[str], when: float, forget_before: float) -> None:
        """Drop the records of `names` and remember them as expired at `when`; forget
        expiries older than `forget_before`."""
        with self._lock:
            data = self._load()
            files, expired = data["files"], data["expired"]
            old = [
                n for n, t in expired.items() if not isinstance(t, int | float) or t < forget_before
            ]
            for name in old:
                del expired[name]
            for name in names:
                files.pop(name, None)
                expired[name] = when
            if len(expired) > MAX_EXPIRED:
                newest = sorted(expired.items(), key=lambda item: item[1])[-MAX_EXPIRED:]
                data["expired"] = dict(newest)
            if names or old:
                self._save(data)

    def expired_at(self, name: str) -> float | None:
        """When expiry removed the file `name`, if it did and is still remembered."""
        with self._lock:
            when = self._load()["expired"].get(name)
        return when if isinstance(when, int | float) else None

    def _load(self) -> dict[str, dict]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable file records %s: %s", self.path, exc)
            data = {}
        if not isinstance(data, dict):
            data = {}
        return {
            key: value if isinstance(value := data.get(key), dict) else {}
            for key in ("files", "expired")
        }

    def _save(self, data: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        with open(temp, "w", encoding="utf-8") as f:
            json.dump({"version": 1, **data}, f, ensure_ascii=False)
        os.replace(temp, self.path)
