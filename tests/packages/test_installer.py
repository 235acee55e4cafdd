"""The installer with real pip, against a directory of wheels the test makes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kernels.launcher import default_kernel_python
from packages.allowlist import Allowlist
from packages.errors import PackageInstallFailed, PackageRefused
from packages.installer import DONE, PackageInstaller
from tests.packages.wheels import make_wheel


@pytest.fixture
def index(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "kss-demo-top", "1.0", requires=("kss-demo-dep>=2",))
    make_wheel(wheels, "kss-demo-dep", "2.1")
    make_wheel(wheels, "kss-demo-solo", "0.3")
    (wheels / "kss_demo_broken-1.0-py3-none-any.whl").write_bytes(b"not a zip at all")
    return wheels


@pytest.fixture
def installer(tmp_path: Path, index: Path) -> PackageInstaller:
    allow = tmp_path / "allow.txt"
    allow.write_text("kss-demo-top\nkss-demo-solo\nkss-demo-broken\nnumpy\n")
    return PackageInstaller(
        tmp_path / "cache", Allowlist.read(allow), default_kernel_python(), index=str(index)
    )


async def test_a_package_and_its_dependency_install_into_the_cache_once(installer):
    said: list[str] = []
    first = await installer.install(["kss-demo-top"], said.append)
    assert {(p.name, p.version, p.cached) for p in first} == {
        ("kss-demo-top", "1.0", False),
        ("kss-demo-dep", "2.1", False),  # not on the allowlist, but needed: allowed
    }
    assert all(p.path is not None and (p.path / DONE).exists() for p in first)
    assert any("installing kss-demo-top 1.0" in line for line in said)
    again = await installer.install(["kss-demo-top==1.0"])
    assert all(p.cached for p in again) and installer.installs == 2
    top = next(p for p in again if p.name == "kss-demo-top")
    assert (top.path / "kss_demo_top" / "__init__.py").read_text().startswith("VERSION = '1.0'")


async def test_concurrent_requests_install_once(installer):
    results = await asyncio.gather(*(installer.install(["kss-demo-solo"]) for _ in range(4)))
    assert installer.installs == 1
    assert len({r[0].path for r in results}) == 1


async def test_what_the_kernels_environment_has_is_not_installed_again(installer):
    [numpy] = await installer.install(["numpy"])
    assert numpy.path is None and numpy.version[0].isdigit() and installer.installs == 0


async def test_refused_and_broken_packages_leave_nothing_behind(installer, tmp_path):
    with pytest.raises(PackageRefused, match="kss-demo-dep"):
        await installer.install(["kss-demo-dep"])  # a dependency, not asked for by itself
    with pytest.raises(PackageInstallFailed):
        await installer.install(["kss-demo-broken"])
    cache = tmp_path / "cache"
    leftovers = [p.name for p in cache.iterdir()] if cache.exists() else []
    assert not [name for name in leftovers if not name.startswith(".lock-")], leftovers


async def test_an_install_over_the_size_cap_fails_whole(tmp_path, index):
    allow = tmp_path / "allow.txt"
    allow.write_text("kss-demo-solo\n")
    small = PackageInstaller(
        tmp_path / "cache",
        Allowlist.read(allow),
        default_kernel_python(),
        index=str(index),
        max_bytes=10,
    )
    with pytest.raises(PackageInstallFailed, match="over the limit"):
        await small.install(["kss-demo-solo"])
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".lock-")]
