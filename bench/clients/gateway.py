"""Jupyter Kernel Gateway run as its users run it: jupyter-websocket mode with a token."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from bench.clients.base import ExecResult, Session, set_nodelay
from bench.clients.jupyter_ws import JupyterWsSession
from bench.config import BenchConfig
from bench.kernelspec import KERNEL_NAME, write_kernelspec
from bench.procs import ManagedProcess, free_port, kernel_procs, rss_bytes

log = logging.getLogger(__name__)

MAX_FRAME = 256 * 1024 * 1024


class GatewaySession:
    """A kernel made by POST /api/kernels, driven over its channels WebSocket."""

    def __init__(self, system: GatewaySystem, kernel_id: str, ws: JupyterWsSession) -> None:
        self.system = system
        self.kernel_id = kernel_id
        self.ws = ws

    async def execute(self, code: str, timeout_s: float) -> ExecResult:
        return await self.ws.execute(code, timeout_s)

    async def close(self) -> None:
        self.ws.disconnect()
        await self.system.request("DELETE", f"/api/kernels/{self.kernel_id}")


class GatewaySystem:
    """Starts `python -m kernel_gateway` with our kernelspec and speaks to it."""

    name = "gateway"
    label = "Kernel Gateway"

    def __init__(self, cfg: BenchConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir / "gateway"
        self.token = secrets.token_hex(16)
        self.port = 0
        self.proc: ManagedProcess | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, Any]:
        return {
            "mode": "jupyter-websocket",
            "auth": "token",
            "iopub_rate_limit": "off (ZMQChannelsWebsocketConnection.limit_rate=False)",
            "nagle": "on (Kernel Gateway default)",
            "kernel": KERNEL_NAME,
        }

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        jupyter_path = self.workdir / "share"
        write_kernelspec(jupyter_path, self.cfg.kernel_python)
        env = dict(os.environ)
        env.update(
            JUPYTER_PATH=str(jupyter_path),
            JUPYTER_CONFIG_DIR=str(self.workdir / "config"),
            JUPYTER_RUNTIME_DIR=str(self.workdir / "runtime"),
            JUPYTER_DATA_DIR=str(self.workdir / "data"),
            JUPYTER_PLATFORM_DIRS="1",
        )
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.api=kernel_gateway.jupyter_websocket",
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={self.port}",
            "--KernelGatewayApp.port_retries=0",
            f"--KernelGatewayApp.default_kernel_name={KERNEL_NAME}",
            # Its IOPub rate limit would throttle S3 to 1 MB/s; off, so throughput compares.
            "--ZMQChannelsWebsocketConnection.limit_rate=False",
        ]
        env["KG_AUTH_TOKEN"] = self.token  # on the environment, not the command line
        self.proc = ManagedProcess("kernel-gateway", argv, self.workdir / "kg.log", env=env)
        self.proc.start()
        await self.proc.wait_http(
            f"{self.base}/api", self.cfg.startup_timeout_s, headers=self._headers()
        )

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else json.dumps(body)
        if payload is None and method == "POST":
            payload = "{}"
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                f"{self.base}{path}",
                method=method,
                headers=self._headers(),
                body=payload,
                request_timeout=self.cfg.exec_timeout_s,
            )
        )
        return json.loads(resp.body) if resp.body else None

    async def open_session(self, user: str) -> Session:
        model = await self.request("POST", "/api/kernels", {"name": KERNEL_NAME})
        kernel_id = model["id"]
        url = f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?token={self.token}"
        try:
            conn = await websocket_connect(
                HTTPRequest(url, connect_timeout=30, request_timeout=self.cfg.exec_timeout_s),
                max_message_size=MAX_FRAME,
            )
        except BaseException:
            await self.request("DELETE", f"/api/kernels/{kernel_id}")
            raise
        set_nodelay(conn)  # the client's end only; the gateway's end stays as it ships
        return GatewaySession(self, kernel_id, JupyterWsSession(conn))

    @property
    def server_pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def open_plain_session(self, user: str) -> Session:
        """A kernel read by a plain `websockets` client (S2's second row)."""
        from bench.clients.plain import PlainJupyterSession, open_plain

        kernel_id = (await self.request("POST", "/api/kernels", {"name": KERNEL_NAME}))["id"]
        url = f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?token={self.token}"

        async def delete() -> None:
            await self.request("DELETE", f"/api/kernels/{kernel_id}")

        try:
            conn = await open_plain(url)
        except BaseException:
            await delete()
            raise
        return PlainJupyterSession(conn, delete)

    def memory(self) -> tuple[int | None, list[int]]:
        if self.proc is None:
            return None, []
        kernels = [rss_bytes(proc.pid) for proc in kernel_procs(self.proc.pid)]
        return rss_bytes(self.proc.pid), [rss for rss in kernels if rss is not None]
