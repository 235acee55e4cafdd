"""Our server (`python -m server`), driven over its WebSocket or its REST execute call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shlex
import uuid
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from bench.clients.base import ExecResult, Session, Stopwatch, set_nodelay, text_plain
from bench.config import BenchConfig
from bench.procs import ManagedProcess, free_port, kernel_procs, rss_bytes

log = logging.getLogger(__name__)

MAX_FRAME = 256 * 1024 * 1024
OUTPUT_CAP = 64_000_000


async def start_wire_server(cfg: BenchConfig, workdir: Path) -> tuple[ManagedProcess, str]:
    """A MongoDB wire-protocol server for the MongoDB store: `secantusd-py` from the
    server's venv (the `secantusdb` test extra), on a free port; (process, URI)."""
    port = free_port()
    exe = str(Path(cfg.server_python).parent / "secantusd-py")
    argv = [exe, "--host", "127.0.0.1", "--port", str(port), "--standalone"]
    argv += ["--storage-path", str(workdir / "mongo"), "--log-level", "WARNING"]
    proc = ManagedProcess("secantusd-py", argv, workdir / "mongo.log")
    proc.start()
    deadline = asyncio.get_running_loop().time() + cfg.startup_timeout_s
    while True:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"secantusd-py exited:\n{proc.log_tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc, f"mongodb://127.0.0.1:{port}/"
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("secantusd-py did not listen") from None
            await asyncio.sleep(0.1)


def apply_event(event: dict[str, Any], result: ExecResult) -> bool:
    """Fold one server event of our execution into `result`; True when it ends it."""
    kind = event.get("type")
    if kind == "stream":
        result.stdout_bytes += len(str(event.get("text", "")).encode())
    elif kind in ("display", "result"):
        data = event.get("data") or {}
        if "image/png" in data:
            result.images += 1
            result.image_bytes = len(data["image/png"])
        if kind == "result":
            result.text = text_plain(data)
    elif kind == "package":
        result.packages[str(event.get("name"))] = str(event.get("state"))
    elif kind == "error":
        result.error = f"{event.get('ename')}: {event.get('evalue')}"
    elif kind == "done":
        result.status = str(event.get("status", "unknown"))
        return True
    elif kind == "rejected":
        result.status = "rejected"
        result.error = json.dumps(event)[:300]
        return True
    return False


class OursWsSession:
    """One user's WebSocket; executions are sent one at a time and read until `done`."""

    def __init__(self, system: OursSystem, user: str, conn: WebSocketClientConnection) -> None:
        self.system = system
        self.user = user
        self.conn = conn

    async def execute(self, code: str, timeout_s: float) -> ExecResult:
        result = ExecResult()
        watch = Stopwatch()
        exec_id = uuid.uuid4().hex
        try:
            async with asyncio.timeout(timeout_s):
                frame = {"type": "execute", "id": exec_id, "code": code}
                await self.conn.write_message(json.dumps(frame))
                while True:
                    raw = await self.conn.read_message()
                    if raw is None:
                        result.status = "disconnected"
                        break
                    event = json.loads(raw)
                    if event.get("id") != exec_id:
                        continue
                    result.messages += 1
                    if apply_event(event, result):
                        break
        except TimeoutError:
            result.status = "timeout"
        result.elapsed_s = watch.elapsed()
        return result

    async def close(self) -> None:
        self.conn.close()
        await self.system.delete_session(self.user)


class OursRestSession:
    """One user driven by `POST /api/sessions/{user}/execute`: one request, whole result."""

    def __init__(self, system: OursSystem, user: str) -> None:
        self.system = system
        self.user = user

    async def execute(self, code: str, timeout_s: float) -> ExecResult:
        result = ExecResult()
        watch = Stopwatch()
        try:
            body = await self.system.request(
                "POST",
                f"/api/sessions/{self.user}/execute",
                {"code": code, "timeout": timeout_s},
                timeout_s=timeout_s + 5,
            )
        except (HTTPClientError, OSError) as exc:
            result.status = "http-error"
            result.error = repr(exc)
            result.elapsed_s = watch.elapsed()
            return result
        result.elapsed_s = watch.elapsed()
        result.messages = 1
        result.status = str(body.get("status"))
        result.stdout_bytes = len(str(body.get("stdout") or "").encode())
        result.text = text_plain(body.get("result"))
        result.images = sum(
            1 for out in body.get("outputs") or [] if "image/png" in (out.get("data") or {})
        )
        if body.get("error"):
            result.error = json.dumps(body["error"])[:300]
        return result

    async def close(self) -> None:
        await self.system.delete_session(self.user)


class OursSystem:
    """Starts our server on 127.0.0.1 with a bench API key; `transport` is 'ws' or 'rest'."""

    def __init__(
        self,
        cfg: BenchConfig,
        workdir: Path,
        name: str,
        label: str,
        pool_size: int | None,
        transport: str = "ws",
        sandbox: bool = False,
        mongo: bool = False,
        args: tuple[str, ...] = (),
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.label = label
        self.workdir = workdir / name
        self.pool_size = pool_size
        self.transport = transport
        self.sandbox = sandbox
        self.secret = secrets.token_hex(16)
        self.metrics_token = secrets.token_hex(16)  # /metrics is on, as in production
        self.port = 0
        self.proc: ManagedProcess | None = None
        # `args`: flags of this system's own (S13's package index), then the operator's.
        self.extra_args = [*args, *shlex.split(os.environ.get("BENCH_OURS_ARGS", ""))]
        self.mongo = mongo
        self.mongodb_uri = ""  # set at start when the store is MongoDB
        self.mongo_proc: ManagedProcess | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, Any]:
        pool = "server default" if self.pool_size is None else self.pool_size
        return {
            "transport": self.transport,
            "pool_size": pool,
            "sandbox": "on (bubblewrap)" if self.sandbox else "off (--no-sandbox)",
            "output_cap_bytes": OUTPUT_CAP,
            "extra_args": self.extra_args,
            "store": "MongoDB (secantusd-py)" if self.mongo else "SQLite",
        }

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [
            self.cfg.server_python,
            "-m",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.workdir / "data"),
            "--api-key",
            f"bench={self.secret}",
            "--metrics-token",
            self.metrics_token,
        ]
        if not self.sandbox:
            argv.append("--no-sandbox")
        if self.pool_size is not None:
            argv += ["--pool-size", str(self.pool_size)]
        # S3 sends 20 MB; the default 10 MB per-execution cap would cut it off halfway.
        argv += ["--output-cap-bytes", str(OUTPUT_CAP)]
        argv += ["--kernel-python", self.cfg.kernel_python]
        if self.mongo:
            self.mongo_proc, self.mongodb_uri = await start_wire_server(self.cfg, self.workdir)
            argv += ["--mongodb-uri", self.mongodb_uri]
        argv += self.extra_args
        server_dir = Path(self.cfg.server_dir)
        self.proc = ManagedProcess(self.name, argv, self.workdir / "server.log", cwd=server_dir)
        self.proc.start()
        await self.proc.wait_http(f"{self.base}/api/health", self.cfg.startup_timeout_s)

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        if self.mongo_proc is not None:
            self.mongo_proc.stop()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}

    async def request(
        self, method: str, path: str, body: Any = None, timeout_s: float | None = None
    ) -> Any:
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"{self.base}{path}",
                method=method,
                headers=self._headers(),
                body=None if body is None else json.dumps(body),
                allow_nonstandard_methods=True,
                request_timeout=timeout_s or self.cfg.exec_timeout_s,
            )
        )
        return json.loads(resp.body) if resp.body else None

    async def scrape(self, timeout_s: float) -> bytes:
        """`GET /metrics` as Prometheus would: the text exposition."""
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"{self.base}/metrics",
                headers={"Authorization": f"Bearer {self.metrics_token}"},
                request_timeout=timeout_s,
            )
        )
        return bytes(resp.body)

    async def notebook(self, user: str, timeout_s: float) -> bytes:
        """`GET .../notebook`: the raw .ipynb body."""
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"{self.base}/api/sessions/{user}/notebook",
                headers=self._headers(),
                request_timeout=timeout_s,
            )
        )
        return bytes(resp.body)

    @property
    def server_pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def delete_session(self, user: str) -> None:
        await self.request("DELETE", f"/api/sessions/{user}")

    async def open_session(self, user: str) -> Session:
        if self.transport == "rest":
            return OursRestSession(self, user)
        url = f"ws://127.0.0.1:{self.port}/api/sessions/{user}/ws?token={self.secret}"
        conn = await websocket_connect(
            HTTPRequest(url, connect_timeout=30, request_timeout=self.cfg.exec_timeout_s),
            max_message_size=MAX_FRAME,
        )
        set_nodelay(conn)
        return OursWsSession(self, user, conn)

    async def open_plain_session(self, user: str) -> Session:
        """The same WebSocket read by a plain `websockets` client (S2's second row)."""
        from bench.clients.plain import PlainOursSession, open_plain

        url = f"ws://127.0.0.1:{self.port}/api/sessions/{user}/ws?token={self.secret}"
        return PlainOursSession(await open_plain(url), lambda: self.delete_session(user))

    def memory(self) -> tuple[int | None, list[int]]:
        if self.proc is None:
            return None, []
        kernels = [rss_bytes(proc.pid) for proc in kernel_procs(self.proc.pid)]
        return rss_bytes(self.proc.pid), [rss for rss in kernels if rss is not None]
