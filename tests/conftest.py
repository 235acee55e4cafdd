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

from server.app import lifespan, make_app
from server.config import Settings, finalize, with_options
from server.http_server import EdgeServer, make_http_server
from server.state import AppState
from tests.client import Api

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


class RunningServer:
    def __init__(self, state: AppState, settings: Settings, http: EdgeServer) -> None:
        self.state = state
        self.settings = settings
        self.http = http
        self.base = f"http://127.0.0.1:{settings.port}"
        self.api = Api(self.base, KEY)
        self.api2 = Api(self.base, KEY2)


@asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with lifespan(settings) as state:
        http = make_http_server(make_app(state), settings)
        http.listen(settings.port, "127.0.0.1")
        try:
            await state.pool.wait_warm()
            yield RunningServer(state, settings, http)
        finally:
            http.stop()
            await http.close_all_connections()


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
