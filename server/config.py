"""The one configuration source: a frozen `Settings` from CLI flags and `KSS_*` env vars.

Every option is declared once, as a dataclass field whose metadata has `help` (and, when the
option is named otherwise than the field, `option`): the server's own fields here, and the
parts the server hands on whole, declared where they are used: execution limits
(`kernels.session.Limits`), the sandbox (`kernels.sandbox.SandboxPolicy`) and the file area
(`files.area.FileLimits`). `options()` reads them all; the flag (`--pool-size`) and the env
var (`KSS_POOL_SIZE`) come from the option's name. A flag wins over the env var, which wins
over the default. `environ` is injectable so tests pass their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import re
import secrets
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from files.area import FileLimits
from kernels.limits import Limits
from kernels.preload import DATA_STACK, check_modules
from kernels.sandbox import SandboxPolicy

from .origins import parse_origins

NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
# As root the data dir defaults to a system path: its path shows in a sandboxed kernel's
# mount table (as the source of the work dir), and must not name a checkout or a home.
DEFAULT_ROOT_DATA_DIR = Path("/var/lib/kss")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ON_OFF = ("on", "off")


def _help(text: str, **more: Any) -> Any:
    return {"help": text, **more}


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata=_help("address to listen on"))
    port: int = field(default=8765, metadata=_help("port to listen on"))
    data_dir: Path = field(
        default=Path(),  # "": /var/lib/kss as root (a neutral path), else ./.data
        metadata=_help("where the store, files and generated key live (root: /var/lib/kss)"),
    )
    api_keys: tuple[tuple[str, str], ...] = ()  # (tenant, key): --api-key, KSS_API_KEYS
    pool_size: int = field(
        default=2, metadata=_help("warm kernels kept started and idle (0 disables the pool)")
    )
    preload: tuple[str, ...] = field(
        default=DATA_STACK,
        metadata=_help(
            "modules warm kernels import before they are claimed (comma list; empty: none)"
        ),
    )
    max_starting_kernels: int = field(
        default=0, metadata=_help("kernels starting at once, others wait (0: CPU count + 1)")
    )
    replay_total_bytes: int = field(
        default=256_000_000,
        metadata=_help(
            "bytes of events all sessions keep in memory for replay; the oldest go first"
        ),
    )
    max_sessions: int = field(
        default=100,
        metadata=_help("most sessions (kernels in use) at once; the LRU idle one is reclaimed"),
    )
    max_sessions_per_tenant: int = field(
        default=0, metadata=_help("most sessions of one tenant at once (0: --max-sessions)")
    )
    kernel_start_timeout: float = field(
        default=60, metadata=_help("seconds a kernel gets to start")
    )
    max_code_bytes: int = field(
        default=1_000_000, metadata=_help("largest code accepted in one execute request")
    )
    idle_timeout: float = field(
        default=1200, metadata=_help("seconds without executions before a kernel is culled")
    )
    janitor_interval: float = field(default=30, metadata=_help("seconds between expiry sweeps"))
    file_workers: int = field(
        default=4, metadata=_help("threads for file work, shared fairly: one per user at a time")
    )
    transcript_ttl_seconds: float = field(
        default=7 * 86400,
        metadata=_help("seconds after the last activity a transcript expires"),
    )
    header_timeout: float = field(
        default=60, metadata=_help("seconds a request's headers may take; also keep-alive idle")
    )
    body_idle_timeout: float = field(
        default=60, metadata=_help("seconds a request body may go without a byte (then 408)")
    )
    max_connections_per_address: int = field(
        default=256, metadata=_help("open connections one client address may hold (0: any)")
    )
    max_connections: int = field(
        default=0, metadata=_help("open connections in total (0: from the open-file limit)")
    )
    package_allowlist: str = field(
        default="",
        metadata=_help(
            "file of package names sessions may install, one a line ('': the default list, "
            "packages/allowlist.txt; 'off': no installs)"
        ),
    )
    package_index: str = field(
        default="",
        metadata=_help("where installs come from: '' pip's own configuration, a URL, or a dir"),
    )
    package_only_binary: bool = field(
        default=True, metadata=_help("install wheels only, never build from source (on or off)")
    )
    package_install_timeout: float = field(
        default=300, metadata=_help("seconds one package install may take")
    )
    package_max_bytes: int = field(
        default=1_000_000_000, metadata=_help("largest one installed distribution may be")
    )
    allowed_origins: str = field(
        default="",
        metadata=_help(
            "web origins (scheme://host[:port], comma-separated) whose pages may call the API "
            "and open WebSockets; the server's own origin always may"
        ),
    )
    max_token_ttl: float = field(
        default=86400,
        metadata=_help("longest life in seconds of a scoped token or signed link (default 1 h)"),
    )
    sandbox: str = field(
        default="on",
        metadata=_help("on or off: run kernels under bubblewrap (off is unsafe)", choices=ON_OFF),
    )
    kernel_python: str = field(
        default="", metadata=_help("interpreter kernels run with (default: .kernel-venv)")
    )
    runtime_dir: Path = field(
        default=Path(), metadata=_help("short path for kernel sockets (default under /tmp)")
    )
    log_level: str = field(
        default="INFO", metadata=_help("DEBUG, INFO, WARNING or ERROR", choices=LOG_LEVELS)
    )
    log_format: str = field(
        default="",
        metadata=_help(
            "json (one object a line) or text ('': text on a terminal, else json)",
            choices=("json", "text"),
        ),
    )
    metrics_token: str = field(
        default="",
        metadata=_help("bearer token for GET /metrics on the API port ('': not served there)"),
    )
    metrics_port: int = field(
        default=0,
        metadata=_help("serve GET /metrics without a token on this port of --host (0: off)"),
    )
    drain_timeout: float = field(
        default=30,
        metadata=_help("seconds running executions get to finish on SIGTERM, then interrupted"),
    )
    mongodb_uri: str = field(
        default="",
        metadata=_help(
            "MongoDB URI: keep sessions, transcripts and file records there (not SQLite)"
        ),
    )
    mongodb_db: str = field(default="kss", metadata=_help("MongoDB database of the store"))
    transcript_buffer: int = field(
        default=200_000,
        metadata=_help("transcript items held while the store is unreachable; more are dropped"),
    )
    replica_id: str = field(
        default="",
        metadata=_help("this replica's name among servers sharing one MongoDB (needs the URI)"),
    )
    advertise_url: str = field(
        default="", metadata=_help("where other replicas reach this one (default http://HOST:PORT)")
    )
    lease_seconds: float = field(
        default=15, metadata=_help("seconds a replica's lease on a user's kernel lasts unrenewed")
    )
    limits: Limits = field(default_factory=Limits)
    sandbox_policy: SandboxPolicy = field(default_factory=SandboxPolicy)
    files: FileLimits = field(default_factory=FileLimits)
    generated_key: bool = False  # set by `finalize` when it made the key

    @property
    def max_request_bytes(self) -> int:
        """Largest JSON request body or WebSocket frame: the code plus room for the rest."""
        return self.max_code_bytes * 6 + 65_536  # JSON may escape each byte up to \\uXXXX


PARTS = ("limits", "sandbox_policy", "files")  # the Settings fields that are whole parts


@dataclass(frozen=True)
class Option:
    """One server option: `--<name with dashes>` and `KSS_<NAME>`."""

    name: str
    part: str | None  # the Settings field holding it, or None for Settings' own
    field: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return env_name(self.name)


def env_name(option: str) -> str:
    return "KSS_" + option.upper()


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError(raw)


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_PARSERS: dict[Any, Callable[[str], Any]] = {
    tuple[str, ...]: _parse_list,
    int: int,
    float: float,
    str: str,
    Path: Path,
    bool: _parse_bool,
}


def _options_of(cls: type, part: str | None) -> list[Option]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        found.append(
            Option(
                name=f.metadata.get("option") or f.name,
                part=part,
                field=f.name,
                parse=_PARSERS[hints[f.name]],
                default=default,
                help=f.metadata["help"],
                choices=f.metadata.get("choices"),
            )
        )
    return found


def options() -> list[Option]:
    """Every option, the server's own first, then each part's."""
    hints = typing.get_type_hints(Settings)
    found = _options_of(Settings, None)
    for part in PARTS:
        found += _options_of(hints[part], part)
    return found


OPTIONS: dict[str, Option] = {o.name: o for o in options()}


def with_options(settings: Settings, values: Mapping[str, Any]) -> Settings:
    """`settings` with options set by name (`output_cap_bytes=...`), whichever part holds
    them; also takes Settings' other fields (`api_keys`)."""
    own: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        option = OPTIONS.get(name)
        if option is None:
            own[name] = value  # a field of Settings that is not an option (api_keys...)
        elif option.part is None:
            own[option.field] = value
        else:
            parts.setdefault(option.part, {})[option.field] = value
    for part, changes in parts.items():
        own[part] = replace(getattr(settings, part), **changes)
    return replace(settings, **own)


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
    for option in OPTIONS.values():
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            help=f"{option.help} [default {_shown(option.default)!s:.40}; env {option.env}]",
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


def _shown(value: Any) -> Any:
    return ",".join(value) if isinstance(value, tuple) else value


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from `argv` (flags) over `environ` (KSS_*) over defaults."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for option in OPTIONS.values():
        raw = getattr(args, option.name)
        if raw is None:
            raw = environ.get(option.env)
        if raw is None or (raw == "" and option.parse is not _parse_list):
            continue  # unset; an empty list is a value (`--preload ""`: none)
        try:
            values[option.name] = option.parse(raw)
        except ValueError:
            raise ValueError(f"{option.name}: {raw!r} is not a valid value") from None
    keys = args.api_key or ([environ["KSS_API_KEYS"]] if environ.get("KSS_API_KEYS") else [])
    values["api_keys"] = parse_api_keys(keys)
    return finalize(with_options(Settings(), values))


def finalize(settings: Settings) -> Settings:
    """Validate, make paths absolute, fill derived defaults, generate a key if none."""
    for option in OPTIONS.values():
        value = _value(settings, option)
        if (
            option.choices
            and value != ""
            and str(value).upper() not in {c.upper() for c in option.choices}
        ):
            raise ValueError(f"{option.name}: want one of {', '.join(option.choices)}")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"{option.name} must not be negative")
    check_modules(settings.preload)
    if settings.file_workers < 1:
        raise ValueError("file_workers must be at least 1")
    policy = settings.sandbox_policy
    if not 0 < policy.uid_first <= policy.uid_last:
        raise ValueError("kernel uid range: want 0 < first <= last")
    try:
        parse_origins(settings.allowed_origins)
    except ValueError as exc:
        raise ValueError(f"allowed_origins: {exc}") from None
    if settings.replica_id and not settings.mongodb_uri:
        raise ValueError("replica_id: replicas share a MongoDB store; set mongodb_uri too")
    if settings.replica_id and not NAME_RE.match(settings.replica_id):
        raise ValueError("replica_id: want 1-128 of [A-Za-z0-9._@-]")
    for name in ("header_timeout", "body_idle_timeout", "max_token_ttl", "lease_seconds"):
        if not getattr(settings, name) > 0:
            raise ValueError(f"{name} must be a positive number of seconds")
    if settings.metrics_port and settings.metrics_port == settings.port:
        raise ValueError("metrics_port must differ from port")
    data_dir = settings.data_dir
    if not str(data_dir) or data_dir == Path():
        data_dir = DEFAULT_ROOT_DATA_DIR if os.geteuid() == 0 else Path(".data")
    data_dir = data_dir.resolve()
    changes: dict[str, Any] = {"data_dir": data_dir, "log_level": settings.log_level.upper()}
    if not settings.log_format:
        changes["log_format"] = "text" if sys.stderr.isatty() else "json"
    if not str(settings.runtime_dir) or settings.runtime_dir == Path():
        # Replicas may share the data dir: each needs its own runtime dir, whose leftovers
        # it removes at start.
        name = f"{data_dir}|{settings.replica_id}" if settings.replica_id else str(data_dir)
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        changes["runtime_dir"] = Path("/tmp") / f"kss-{os.getuid()}-{digest}"
    if settings.replica_id and not settings.advertise_url:
        changes["advertise_url"] = f"http://{settings.host}:{settings.port}"
    if not settings.api_keys:
        changes["api_keys"] = (("default", _generated_key(data_dir)),)
        changes["generated_key"] = True
    return replace(settings, **changes)


def _value(settings: Settings, option: Option) -> Any:
    holder = settings if option.part is None else getattr(settings, option.part)
    return getattr(holder, option.field)


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
