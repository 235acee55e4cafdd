"""Fixtures for the client tests: a real server per module and a client of it.

This folder has no `__init__.py` on purpose: `tests/client.py` (the tests' own HTTP
helper) already owns the module name `tests.client`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from kss_client import Client

from tests.conftest import KEY, RunningServer, make_settings, running_server, sandbox_modes

UIDS = {"kernel_uid_first": 2_500_000, "kernel_uid_last": 2_500_099}


def sandbox_mode() -> str:
    """`on` where this machine can sandbox (as deployed), else `off` (see tests/conftest)."""
    return sandbox_modes()[-1]


@pytest_asyncio.fixture(scope="module")
async def kss(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    """A real server (sandboxed where possible) for one test module."""
    settings = make_settings(tmp_path_factory.mktemp("kss"), sandbox=sandbox_mode(), **UIDS)
    async with running_server(settings) as srv:
        yield srv


@pytest_asyncio.fixture
async def client(kss: RunningServer) -> AsyncIterator[Client]:
    async with Client(kss.base, KEY) as c:
        yield c
