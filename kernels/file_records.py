"""What the file system cannot tell about a user's files: origin and cached sha256.

A small JSON sidecar per work dir, kept outside the directory the kernel can write. Each
record carries the stamp (mtime_ns, size, inode) of the file it describes; a record whose
stamp no longer matches the file is stale, so the kernel rewriting an uploaded file makes it
"generated" and invalidates the cached hash without anyone telling us.
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
    """Name -> Record, persisted to one JSON file, safe across threads and instances."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = _lock_for(path)

    def get(self, name: str) -> Record | None:
        with self._lock:
            raw = self._load().get(name)
        if raw is None:
            return None
        return Record(tuple(raw["stamp"]), raw["origin"], raw["sha256"])  # type: ignore[arg-type]

    def put(self, name: str, stamp: Stamp, origin: str, sha256: str) -> None:
        with self._lock:
            data = self._load()
            data[name] = {"stamp": list(stamp), "origin": origin, "sha256": sha256}
            self._save(data)

    def drop(self, names: list[str]) -> None:
        with self._lock:
            data = self._load()
            if any(data.pop(name, None) is not None for name in list(names)):
                self._save(data)

    def prune(self, keep: set[str]) -> None:
        """Forget records of files that no longer exist."""
        with self._lock:
            data = self._load()
            gone = [name for name in data if name not in keep]
            for name in gone:
                del data[name]
            if gone:
                self._save(data)

    def _load(self) -> dict[str, dict]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable file records %s: %s", self.path, exc)
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        return files if isinstance(files, dict) else {}

    def _save(self, files: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        with open(temp, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "files": files}, f, ensure_ascii=False)
        os.replace(temp, self.path)
