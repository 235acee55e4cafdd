"""`PackageInstaller`: the server installs what a session asks for; kernels only mount it.

Kernels have no network, so the server (which reaches the package index) installs for them,
with pip run by the kernels' own interpreter (so wheels match their Python and platform):

1. The requested names are checked against the allowlist (their dependencies are allowed).
2. pip resolves them against the kernels' environment (`install --dry-run --report`): what
   the environment already has is not installed again, and what is left is an exact list
   of distributions, each with the artifact it would download and its hash.
3. Each distribution is installed alone (`--no-deps --target`) into the shared cache, at
   `<cache>/<name>-<version>-<hash prefix>`: content-addressed, so one install serves every
   user, and concurrent requests for it (in this process, or another on the same cache)
   install it once. A distribution is written to a temp dir and renamed into place only
   when complete and under the size cap, so a failure leaves nothing half-installed.

Only wheels are taken unless the operator allows source builds (`--only-binary :all:`):
installing a wheel runs no code. Every step is bounded by the install timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .allowlist import Allowlist
from .errors import PackageInstallFailed, PackageInstallTimeout

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
DONE = ".installed"  # the marker of a complete cache entry


@dataclass(frozen=True)
class Installed:
    """One distribution a session has: where it lies, or None if the kernels' own
    environment already provides it."""

    name: str
    version: str
    path: Path | None
    cached: bool


@dataclass(frozen=True)
class _Planned:
    name: str
    version: str
    source: str  # the artifact pip chose (a URL), or name==version
    key: str


class PackageInstaller:
    def __init__(
        self,
        cache: Path,
        allowlist: Allowlist,
        python: str,
        *,
        index: str = "",
        only_binary: bool = True,
        timeout: float = 300,
        max_bytes: int = 1 << 30,
    ) -> None:
        self.cache = cache
        self.allowlist = allowlist
        self.python = python
        self.index = index
        self.only_binary = only_binary
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._installing: dict[str, asyncio.Future[Path]] = {}
        self.installs = 0  # distributions this installer put into the cache

    async def install(
        self, requirements: list[str], progress: Progress | None = None
    ) -> list[Installed]:
        """Install `requirements` (and what they need) into the cache; what a session must
        mount, in order. PackageRefused, PackageInstallFailed or PackageInstallTimeout."""
        say = progress or (lambda _text: None)
        wanted = self.allowlist.check(requirements)
        try:
            async with asyncio.timeout(self.timeout):
                plan, present = await self._resolve(wanted)
                done: list[Installed] = [Installed(n, v, None, True) for n, v in present]
                for item in plan:
                    path = self.cache / item.key
                    cached = (path / DONE).exists()
                    if not cached:
                        say(f"installing {item.name} {item.version}")
                        path = await self._install_once(item)
                    done.append(Installed(item.name, item.version, path, cached))
                    say(f"{item.name} {item.version} " + ("(cached)" if cached else "installed"))
                return done
        except TimeoutError:
            raise PackageInstallTimeout(
                f"installing {', '.join(requirements)} took longer than {self.timeout:g} s"
            ) from None

    def _pip(self, *args: str) -> list[str]:
        argv = [self.python, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]
        if self.only_binary:
            argv += ["--only-binary", ":all:"]
        if self.index and "://" in self.index:
            argv += ["--index-url", self.index]
        elif self.index:  # a directory of wheels
            argv += ["--no-index", "--find-links", self.index]
        return argv

    async def _run(self, argv: list[str]) -> str:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await proc.communicate()
        except BaseException:  # a timeout or shutdown: pip must not go on alone
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            lines = [line for line in text.splitlines() if line.strip()]
            reason = "\n".join(lines[-6:])[-1500:] or f"pip exited with {proc.returncode}"
            raise PackageInstallFailed(reason)
        return text

    async def _resolve(
        self, wanted: list[Requirement]
    ) -> tuple[list[_Planned], list[tuple[str, str]]]:
        """What must be installed, and the requested packages the environment already has."""
        with tempfile.TemporaryDirectory(prefix="kss-pip-") as tmp:
            report = Path(tmp) / "report.json"
            args = ["install", "--dry-run", "--quiet", "--report", str(report)]
            await self._run(self._pip(*args, *map(str, wanted)))
            items = json.loads(report.read_text()).get("install", [])
        plan = []
        for item in items:
            meta = item["metadata"]
            name, version = canonicalize_name(meta["name"]), meta["version"]
            info = item.get("download_info") or {}
            digest = (info.get("archive_info") or {}).get("hashes", {}).get("sha256", "")
            plan.append(
                _Planned(
                    name=name,
                    version=version,
                    source=info.get("url") or f"{name}=={version}",
                    key=f"{name}-{version}-{(digest or 'nohash')[:16]}",
                )
            )
        planned = {p.name for p in plan}
        present = []
        for requirement in wanted:
            name = canonicalize_name(requirement.name)
            if name not in planned:
                present.append((name, await self._installed_version(name)))
        return plan, present

    async def _installed_version(self, name: str) -> str:
        code = f"import importlib.metadata as m; print(m.version({name!r}))"
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-c",
            code,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        return out.decode().strip() or "?"

    async def _install_once(self, item: _Planned) -> Path:
        """Install `item` into the cache, once however many ask at the same time."""
        pending = self._installing.get(item.key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._installing[item.key] = future
        try:
            path = await self._install(item)
            future.set_result(path)
            return path
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # consumed here; waiters re-raise it
            raise
        finally:
            del self._installing[item.key]

    async def _install(self, item: _Planned) -> Path:
        final = self.cache / item.key
        lock = await asyncio.to_thread(_lock, self.cache, item.key)
        try:
            if await asyncio.to_thread((final / DONE).exists):  # another process did it
                return final
            temp = await asyncio.to_thread(tempfile.mkdtemp, f".tmp-{item.key}-", "", self.cache)
            try:
                await self._run(self._pip("install", "--no-deps", "--target", temp, item.source))
                size = await asyncio.to_thread(_tree_bytes, Path(temp))
                if size > self.max_bytes:
                    raise PackageInstallFailed(
                        f"{item.name} {item.version} takes {size} bytes installed, over the "
                        f"limit of {self.max_bytes} (--package-max-bytes)"
                    )
                marker = f"{item.name} {item.version} {item.source}\n"
                await asyncio.to_thread(_commit, Path(temp), final, marker)
            finally:
                await asyncio.to_thread(shutil.rmtree, temp, True)  # gone after a commit
            self.installs += 1
            log.info("installed %s %s into the package cache", item.name, item.version)
            return final
        finally:
            os.close(lock)


def _commit(temp: Path, final: Path, marker: str) -> None:
    """Make `temp` the complete cache entry `final`, readable by kernel uids."""
    (temp / DONE).write_text(marker)
    for path in [temp, *temp.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o644))
    if final.exists():  # an incomplete leftover of a crash
        shutil.rmtree(final)
    os.rename(temp, final)


def _lock(cache: Path, key: str) -> int:
    """An exclusive lock on one cache entry, held across processes sharing the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / f".lock-{key}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
