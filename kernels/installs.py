"""Packages one session has: installed by the server (see `packages/`), mounted into its kernel.

A session asks for packages three ways: the REST route, an execution's `install_packages`,
or `%pip install ...` / `!pip install ...` lines in its code, which never reach the kernel's
own pip (the kernel has no network): `split_pip` takes them out of the code. What a session
has is remembered (and recorded with the session), so a kernel that replaces another (after
a death, a timeout, a restart, a server restart) gets the same packages back: each kernel
has them mounted read-only and put on its `sys.path` before it runs the user's code.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .errors import PackagesDisabled
from .kernel import Kernel


class Installed(Protocol):
    name: str
    version: str
    path: Path | None  # None: the kernels' environment has it already
    cached: bool


def described(item: Installed) -> dict[str, str]:
    """A package as the API tells it: `state` is `present` (the kernels' environment has
    it), `cached` (installed earlier, for anyone) or `installed` (just now)."""
    state = "present" if item.path is None else "cached" if item.cached else "installed"
    return {"name": item.name, "version": item.version, "state": state}


class PackageSource(Protocol):
    """The server's installer (`packages.installer.PackageInstaller`)."""

    async def install(
        self, requirements: list[str], progress: Callable[[str], None] | None = None
    ) -> list[Installed]: ...


class PipCommandRefused(ValueError):
    """A pip command in the code other than `install`."""


_PIP_LINE = re.compile(r"^(?P<lead>[ \t]*)(?:%|!)\s*(?:python3? -m )?pip3?\b(?P<rest>.*)$", re.M)


def split_pip(code: str) -> tuple[str, list[str]]:
    """(`code` without its `%pip install` / `!pip install` lines, the requirements they named).

    Each such line is left blank (line numbers stay). Any other pip command (`%pip list`,
    `!pip uninstall x`...) raises PipCommandRefused with a message for the user.
    """
    requirements: list[str] = []

    def take(match: re.Match[str]) -> str:
        try:
            words = shlex.split(match["rest"].split("#", 1)[0])
        except ValueError:
            words = match["rest"].split()
        if not words or words[0] != "install":
            raise PipCommandRefused(
                f"only `%pip install NAME ...` runs here (the server installs packages from "
                f"its allowlist; the kernel has no network): {match.group(0).strip()[:80]!r}"
            )
        names = [w for w in words[1:] if not w.startswith("-")]
        if not names:
            raise PipCommandRefused("`%pip install` needs at least one package name")
        requirements.extend(names)
        return match["lead"]

    return _PIP_LINE.sub(take, code), requirements


class SessionPackages:
    """What one session installed, and which of it its current kernel has mounted."""

    def __init__(self, source: PackageSource | None, requirements: list[str] | None = None):
        self.source = source
        self.requirements: list[str] = list(requirements or [])  # as asked, in order
        self._dirs: dict[str, Path] = {}  # distribution -> its cache dir
        self._mounted: tuple[str, set[str]] = ("", set())  # (kernel id, distributions)

    @property
    def enabled(self) -> bool:
        return self.source is not None

    async def install(
        self, requirements: list[str], progress: Callable[[str], None] | None = None
    ) -> list[Installed]:
        """Install `requirements` (PackageError when refused or failed) and remember them."""
        if self.source is None:
            raise PackagesDisabled("this server installs no packages (--package-allowlist off)")
        installed = await self.source.install(requirements, progress)
        for item in installed:
            if item.path is not None:
                self._dirs[item.name] = item.path
        for requirement in requirements:
            if requirement not in self.requirements:
                self.requirements.append(requirement)
        return installed

    async def mount(self, kernel: Kernel) -> None:
        """Give `kernel` every package of the session it does not have yet (re-installing
        from the cache what a server restart forgot), before it runs the user's code."""
        if self.requirements and not self._dirs and self.source is not None:
            await self.install(list(self.requirements))
        kernel_id, mounted = self._mounted
        if kernel_id != kernel.id:
            mounted = set()
        new = {name: path for name, path in self._dirs.items() if name not in mounted}
        if new:
            paths = await kernel.launcher.add_packages(kernel.slot, list(new.values()))
            kernel.execute(
                f"__import__('sys').path[:0] = {paths!r}; "
                "__import__('importlib').invalidate_caches()",
                silent=True,
            )
            mounted |= set(new)
        self._mounted = (kernel.id, mounted)
