"""The one configuration source: a frozen `Settings` from CLI flags and `KSS_*` env vars.

Every option is declared once in `OPTIONS`; the flag (`--pool-size`) and the env var
(`KSS_POOL_SIZE`) are derived from its name. A flag wins over the env var, which wins over
the default. `environ` is injectable so tests pass their own.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
# As root the data dir defaults to a system path: its path shows in a sandboxed kernel's
# mount table (as the source of the work dir), and must not name a checkout or a home.
DEFAULT_ROOT_DATA_DIR = Path("/var/lib/kss")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path()  # "": /var/lib/kss as root (a neutral path), else ./.data
    api_keys: tuple[tuple[str, str], ...] = ()  # (tenant, key)
    pool_size: int = 2
    max_starting_kernels: int = 0
    max_sessions: int = 100
    max_sessions_per_tenant: int = 0
    exec_timeout: float = 60
    max_exec_timeout: float = 600
    interrupt_grace: float = 3
    kernel_start_timeout: float = 60
    max_code_bytes: int = 1_000_000
    output_cap_bytes: int = 10_000_000
    output_cap_events: int = 20_000
    text_cap_bytes: int = 100_000
    replay_events: int = 10_000
    replay_bytes: int = 32_000_000
    max_queue: int = 100
    idle_timeout: float = 1200
    janitor_interval: float = 30
    file_max_bytes: int = 50_000_000
    user_quota_bytes: int = 500_000_000
    file_ttl_seconds: float = 48 * 3600
    file_workers: int = 4
    transcript_ttl_seconds: float = 7 * 86400
    header_timeout: float = 60
    body_idle_timeout: float = 60
    max_connections_per_address: int = 256
    max_connections: int = 0
    sandbox: str = "on"
    kernel_uid_first: int = 2_000_000
    kernel_uid_last: int = 2_000_999
    kernel_memory_bytes: int = 1 << 30
    kernel_pids: int = 128
    kernel_cpus: float = 1.0
    kernel_file_bytes: int = 50_000_000
    kernel_tmp_bytes: int = 256 << 20
    kernel_message_max_bytes: int = 16 << 20
    stop_strays: str = "on"
    kernel_python: str = ""
    runtime_dir: Path = Path()
    log_level: str = "INFO"
    generated_key: bool = False

    @property
    def max_request_bytes(self) -> int:
        """Largest JSON request body or WebSocket frame: the code plus room for the rest."""
        return self.max_code_bytes * 6 + 65_536  # JSON may escape each byte up to \\uXXXX

    @property
    def tenants_by_key(self) -> dict[str, str]:
        return {key: tenant for tenant, key in self.api_keys}


# name -> (type, help). Defaults come from the dataclass.
OPTIONS: dict[str, tuple[type, str]] = {
    "host": (str, "address to listen on"),
    "port": (int, "port to listen on"),
    "data_dir": (Path, "where the store, files and generated key live (root: /var/lib/kss)"),
    "pool_size": (int, "warm kernels kept started and idle (0 disables the pool)"),
    "max_starting_kernels": (int, "kernels starting at once, others wait (0: CPU count + 1)"),
    "max_sessions": (int, "most sessions (kernels in use) at once; the LRU idle one is reclaimed"),
    "max_sessions_per_tenant": (int, "most sessions of one tenant at once (0: --max-sessions)"),
    "exec_timeout": (float, "default execution timeout, seconds"),
    "max_exec_timeout": (float, "largest timeout a request may ask for, seconds"),
    "interrupt_grace": (float, "seconds a timed-out kernel gets to answer an interrupt"),
    "kernel_start_timeout": (float, "seconds a kernel gets to start"),
    "max_code_bytes": (int, "largest code accepted in one execute request"),
    "output_cap_bytes": (int, "output sent to clients per execution"),
    "output_cap_events": (int, "output events sent to clients per execution"),
    "text_cap_bytes": (int, "stdout/stderr text in the REST execute answer"),
    "replay_events": (int, "events kept per session for reconnect replay"),
    "replay_bytes": (int, "bytes of events kept per session for reconnect replay"),
    "max_queue": (int, "executions that may wait per session"),
    "idle_timeout": (float, "seconds without executions before a kernel is culled"),
    "janitor_interval": (float, "seconds between expiry sweeps"),
    "file_max_bytes": (int, "largest file one upload may create"),
    "user_quota_bytes": (int, "bytes of files one user may keep"),
    "file_ttl_seconds": (float, "seconds after its last change a file expires"),
    "file_workers": (int, "threads for file work, shared fairly: one per user at a time"),
    "transcript_ttl_seconds": (float, "seconds after the last activity a transcript expires"),
    "header_timeout": (float, "seconds a request's headers may take; also keep-alive idle time"),
    "body_idle_timeout": (float, "seconds a request body may go without a byte (then 408)"),
    "max_connections_per_address": (int, "open connections one client address may hold (0: any)"),
    "max_connections": (int, "open connections in total (0: from the open-file limit)"),
    "sandbox": (str, "on or off: run kernels under bubblewrap (off is unsafe)"),
    "kernel_uid_first": (int, "first host uid given to sandboxed kernels"),
    "kernel_uid_last": (int, "last host uid given to sandboxed kernels"),
    "kernel_memory_bytes": (int, "memory limit of one sandboxed kernel (cgroup)"),
    "kernel_pids": (int, "process/thread limit of one sandboxed kernel (cgroup)"),
    "kernel_cpus": (float, "CPU cores one sandboxed kernel may use (cgroup quota; 0 = no cap)"),
    "kernel_file_bytes": (int, "largest file a sandboxed kernel may write (rlimit)"),
    "kernel_tmp_bytes": (int, "size of a sandboxed kernel's private /tmp"),
    "kernel_message_max_bytes": (int, "largest message read from a kernel; more is dropped"),
    "stop_strays": (str, "on or off: stop the processes an execution leaves running"),
    "kernel_python": (str, "interpreter kernels run with (default: .kernel-venv)"),
    "runtime_dir": (Path, "short path for kernel sockets (default under /tmp)"),
    "log_level": (str, "DEBUG, INFO, WARNING or ERROR"),
}


def env_name(option: str) -> str:
    return "KSS_" + option.upper()


def parse_api_keys(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`TENANT=KEY` items (also comma-separated) -> ((tenant, key), ...)."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            tenant, sep, key = part.partition("=")
            if not sep or not NAME_RE.match(tenant) or len(key) < 8:
                raise ValueError(
                    f"bad API key entry {part.split('=')[0]!r}=...: want TENANT=KEY, "
                    "tenant of [A-Za-z0-9._@-], key of 8 or more characters"
                )
            pairs.append((tenant, key))
    return tuple(pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    for name, (_, help_) in OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{help_} [env {env_name(name)}]",
        )
    parser.add_argument(
        "--api-key",
        dest="api_key",
        action="append",
        default=None,
        metavar="TENANT=KEY",
        help="an API key of a tenant; repeatable [env KSS_API_KEYS=t1=k1,t2=k2]",
    )
    parser.add_argument(
        "--no-sandbox",
        dest="sandbox",
        action="store_const",
        const="off",
        help="run kernels without bubblewrap (same as --sandbox off)",
    )
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from `argv` (flags) over `environ` (KSS_*) over defaults."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for name, (kind, _) in OPTIONS.items():
        raw = getattr(args, name)
        if raw is None:
            raw = environ.get(env_name(name))
        if raw is None or raw == "":
            continue
        try:
            values[name] = kind(raw)
        except ValueError:
            raise ValueError(f"{name}: {raw!r} is not a valid {kind.__name__}") from None
    keys = args.api_key or ([environ["KSS_API_KEYS"]] if environ.get("KSS_API_KEYS") else [])
    values["api_keys"] = parse_api_keys(keys)
    settings = Settings(**values)
    return finalize(settings)


def finalize(settings: Settings) -> Settings:
    """Validate, make paths absolute, fill derived defaults, generate a key if none."""
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    if not str(values["data_dir"]) or values["data_dir"] == Path():
        values["data_dir"] = DEFAULT_ROOT_DATA_DIR if os.geteuid() == 0 else Path(".data")
    data_dir = Path(values["data_dir"]).resolve()
    values["data_dir"] = data_dir
    for name in ("sandbox", "stop_strays"):
        if values[name] not in ("on", "off"):
            raise ValueError(f"{name}: want on or off")
    if values["log_level"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("log_level: want DEBUG, INFO, WARNING or ERROR")
    if values["file_workers"] < 1:
        raise ValueError("file_workers must be at least 1")
    if not 0 < values["kernel_uid_first"] <= values["kernel_uid_last"]:
        raise ValueError("kernel uid range: want 0 < first <= last")
    for name in (
        "pool_size",
        "max_starting_kernels",
        "max_sessions",
        "max_sessions_per_tenant",
        "max_code_bytes",
        "output_cap_bytes",
        "kernel_cpus",
        "max_connections_per_address",
        "max_connections",
    ):
        if values[name] < 0:
            raise ValueError(f"{name} must not be negative")
    for name in ("header_timeout", "body_idle_timeout"):
        if not values[name] > 0:
            raise ValueError(f"{name} must be a positive number of seconds")
    if not str(values["runtime_dir"]) or values["runtime_dir"] == Path():
        digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:10]
        values["runtime_dir"] = Path("/tmp") / f"kss-{os.getuid()}-{digest}"
    if not values["api_keys"]:
        values["api_keys"] = ((("default", _generated_key(data_dir))),)
        values["generated_key"] = True
    return Settings(**values)


def _generated_key(data_dir: Path) -> str:
    """A key kept in the data dir, so it survives restarts of `make run`."""
    path = data_dir / "api-key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
