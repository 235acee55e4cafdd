"""Fixtures for the client tests: a real server per module and a client of it.

This folder has no `__init__.py` on purpose: `tests/client.py` (the tests' own HTTP
helper) already owns the module name `tests.client`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from kss_client import Client

from tests.conftest import (
    KEY,
    RUNNING,
    RunningServer,
    make_settings,
    running_server,
    sandbox_modes,
)
from tests.openapi_check import check_answer

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


@pytest.fixture(scope="session", autouse=True)
def _answers_follow_the_openapi_document() -> Iterator[None]:
    """Every answer the client gets from a server of the tests (not a proxy or a fake) is
    checked against the OpenAPI document, as `tests.client.Api.call` checks the server
    suites' answers: an undocumented one fails the test that got it."""
    send = httpx.AsyncClient.send

    async def checked_send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        response = await send(self, request, **kw)
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        if origin in RUNNING and not kw.get("stream"):
            path = request.url.raw_path.decode()
            body = response.content
            check_answer(request.method, path, response.status_code, response.headers, body)
        return response

    httpx.AsyncClient.send = checked_send  # type: ignore[method-assign]
    try:
        yield
    finally:
        httpx.AsyncClient.send = send  # type: ignore[method-assign]
