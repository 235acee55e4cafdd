"""A real kernel per test module, started by the `LocalLauncher` and stopped after it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from kernels.kernel import Kernel
from tests.kernels.driving import start_local_kernel


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kernel(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Kernel]:
    k = await start_local_kernel(tmp_path_factory.mktemp("run"))
    try:
        yield k
    finally:
        await k.stop()
