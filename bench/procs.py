"""Processes the benchmark starts: launch, wait until ready, measure memory, stop by PID."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

log = logging.getLogger(__name__)

KERNEL_MARK = "ipykernel"  # `-m ipykernel_launcher`, or ours: `-c "...ipykernel.kernelapp..."`


async def run_json(
    argv: Sequence[str], cwd: str, timeout_s: float, env: Mapping[str, str] | None = None
) -> Any:
    """Run a measuring script (with the server's Python) to its end within `timeout_s`, and
    parse what it printed, one JSON document; killed when the time is up."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env or os.environ), stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[1]).name} exited with {proc.returncode}")
    return json.loads(out)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kernel_procs(root: int) -> list[psutil.Process]:
    """The ipykernel processes below `root` (any depth)."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if any(KERNEL_MARK in part for part in child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kernel_pythons(root: int) -> list[psutil.Process]:
    """The kernels' own interpreters below `root`, without a sandbox's wrappers (whose
    command lines name ipykernel too)."""
    found = []
    for proc in kernel_procs(root):
        try:
            argv = proc.cmdline()
            if argv[1:2] in (["-m"], ["-c"]) and KERNEL_MARK in argv[2]:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def rss_bytes(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def memory_of(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) of `pid` in bytes, from smaps_rollup; {} if
    the process is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    kb = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            kb[parts[0].rstrip(":")] = int(parts[1]) * 1024
    if "Rss" not in kb:
        return {}
    return {
        "Rss": kb["Rss"],
        "Pss": kb.get("Pss", 0),
        "USS": kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0),
    }


def kill_procs(procs: Sequence[psutil.Process], deadline_s: float = 5.0) -> None:
    """SIGTERM processes we started (psutil refuses a reused PID), SIGKILL them past a deadline."""
    signalled = []
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
            signalled.append(proc)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(signalled, timeout=deadline_s)
    for proc in alive:
        log.warning("pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, deadline_s)
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=deadline_s)


class ManagedProcess:
    """One server process we started, with its log file; `stop()` also reaps its kernels."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    def start(self) -> None:
        log.info("starting %s: %s", self.name, " ".join(self.argv))
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_http(
        self, url: str, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        """Poll `url` until it answers 200; fail early if the process exits."""
        client = AsyncHTTPClient()
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.1) + 1):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                resp = await client.fetch(url, headers=dict(headers or {}), request_timeout=2.0)
                if resp.code == 200:
                    return
            except (HTTPClientError, OSError):
                pass
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, deadline_s: float = 10.0) -> None:
        """SIGTERM the server, give it `deadline_s` to stop its kernels, then kill leftovers."""
        if self.proc is None or self.proc.returncode is not None:
            return
        leftovers = kernel_procs(self.proc.pid)
        log.info("stopping %s (pid %d, %d kernels)", self.name, self.proc.pid, len(leftovers))
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, deadline_s)
            self.proc.kill()
            self.proc.wait(timeout=deadline_s)
        # Sandboxed kernels' inner processes die a moment after their bwrap parent.
        _, still = psutil.wait_procs([p for p in leftovers if p.is_running()], timeout=2.0)
        if still:
            log.warning("%s left %d kernels running; stopping them", self.name, len(still))
            kill_procs(still)
