"""A real MongoDB wire-protocol server for the tests: `secantusd-py` (the `secantusdb`
package) as a child process on a free port, or the server `KSS_TEST_MONGODB_URI` names (a
real `mongod`). Each user of it takes a database of its own, so tests never see each
other's data."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from tests.polling import until

EXTERNAL_URI = os.environ.get("KSS_TEST_MONGODB_URI", "")


def database_name(prefix: str = "kss_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class WireServer:
    """`secantusd-py --host 127.0.0.1 --port P --storage-path DIR`, stoppable and
    restartable on the same port with the same data."""

    def __init__(self, storage: Path, port: int) -> None:
        self.storage = storage
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        exe = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
        assert exe, "secantusd-py is missing: `make deps` installs the test extras"
        argv = [exe, "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--storage-path", str(self.storage), "--standalone", "--log-level", "WARNING"]
        self.proc = subprocess.Popen(  # noqa: ASYNC220
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await until(self._answers, timeout=60, interval=0.05)

    async def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "secantusd-py exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        return True

    def stop(self) -> None:
        """Stop it (SIGTERM, as a restart would), and wait until it has."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
