"""A real server on a free port for the tests: its settings, starting and stopping it, and
the sandbox modes this machine can run. The suites' fixtures build on these
(tests/server/conftest.py, tests/client/conftest.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from server.app import lifespan, make_app
from server.config import Settings, finalize, with_options
from server.http_server import EdgeServer, make_http_server
from server.state import AppState
from tests.client import Api
from tests.mongo import EXTERNAL_URI, WireServer

KEY = "test-key-tenant-one"
KEY2 = "test-key-tenant-two"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Test settings; `overrides` are options by name (`output_cap_bytes=...`) or Settings
    fields, whichever part of the settings holds them."""
    base = {
        "host": "127.0.0.1",
        "port": free_port(),
        "data_dir": data_dir,
        "api_keys": (("t1", KEY), ("t2", KEY2)),
        "pool_size": 1,
        "preload": (),  # a second of CPU per spare; preloading: tests/kernels/test_pool.py
        "exec_timeout": 30,
        "interrupt_grace": 2,
        "sandbox": "off",
        "janitor_interval": 3600,
    }
    return finalize(with_options(Settings(), {**base, **overrides}))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A MongoDB server for the whole run: `KSS_TEST_MONGODB_URI`'s, else a `secantusd-py`
    on a free port. Users of it take a database of their own (`tests.mongo.database_name`)."""
    if EXTERNAL_URI:
        yield EXTERNAL_URI
        return
    server = WireServer(tmp_path_factory.mktemp("mongo"), free_port())
    await server.start()
    try:
        yield server.uri
    finally:
        server.stop()


class RunningServer:
    def __init__(self, state: AppState, settings: Settings, http: EdgeServer) -> None:
        self.state = state
        self.settings = settings
        self.http = http
        self.base = f"http://127.0.0.1:{settings.port}"
        self.api = Api(self.base, KEY)
        self.api2 = Api(self.base, KEY2)


# The base URLs of the servers `running_server` runs now: answers from these are ours, held
# to the OpenAPI document (`tests/openapi_check.py`) by any client that sees them.
RUNNING: set[str] = set()


@asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with lifespan(settings) as state:
        http = make_http_server(make_app(state), settings)
        http.listen(settings.port, "127.0.0.1")
        server = None
        try:
            await state.pool.wait_warm()
            server = RunningServer(state, settings, http)
            RUNNING.add(server.base)
            yield server
        finally:
            if server is not None:
                RUNNING.discard(server.base)
            http.stop()
            await http.close_all_connections()


def sandbox_only_module() -> str | None:
    """For a module whose every test needs the sandbox: why it cannot run here (None when it
    can). With KSS_TEST_ALLOW_NO_SANDBOX=1 the module is skipped instead; otherwise each test
    calls `require_sandbox` and fails with the reason."""
    from kernels.sandbox import check_sandbox_available

    reason = check_sandbox_available()
    if reason and os.environ.get("KSS_TEST_ALLOW_NO_SANDBOX") == "1":
        pytest.skip(f"sandbox unavailable: {reason}", allow_module_level=True)
    return reason


def require_sandbox(reason: str | None) -> None:
    if reason:
        pytest.fail(f"sandbox unavailable on this machine: {reason} (make system-deps)")


def sandbox_modes() -> list[str]:
    """Both modes where this machine can sandbox; only `off` where it cannot (said loudly)."""
    from kernels.sandbox import check_sandbox_available

    reason = check_sandbox_available()
    if reason is None:
        return ["off", "on"]
    if os.environ.get("KSS_TEST_ALLOW_NO_SANDBOX") == "1":
        return ["off"]
    raise RuntimeError(
        f"the sandbox is unavailable here ({reason}); `make test` installs bubblewrap. "
        "Set KSS_TEST_ALLOW_NO_SANDBOX=1 to run the suites without it."
    )
