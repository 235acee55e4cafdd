"""The server every suite here shares per module, once per sandbox mode this machine runs,
and the sockets a test opened to it closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import RunningServer, make_settings, running_server, sandbox_modes


@pytest_asyncio.fixture(scope="module", params=sandbox_modes(), ids=lambda m: f"sandbox-{m}")
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    settings = make_settings(tmp_path_factory.mktemp("data"), sandbox=request.param)
    async with running_server(settings) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _close_test_sockets(request: pytest.FixtureRequest) -> Any:
    yield
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        srv.api.close_sockets()
        srv.api2.close_sockets()
