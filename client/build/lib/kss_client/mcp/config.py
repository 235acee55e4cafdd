"""The MCP server's settings, each declared once: a flag and a `KSS_*` variable from its name.

A flag wins over the variable, which wins over the default. `environ` is injectable so
tests pass their own. Variables are named apart from the server's (`KSS_URL`, `KSS_USER`,
`KSS_MCP_PORT`, ...) so one environment can hold both.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from ..model import DEFAULT_MAX_CHARS


@dataclass(frozen=True)
class McpSettings:
    url: str = "http://127.0.0.1:8765"
    api_key: str = ""
    user: str = "mcp"
    timeout: float = 60.0
    max_chars: int = DEFAULT_MAX_CHARS
    http: bool = False
    mcp_host: str = "127.0.0.1"
    mcp_port: int = 8000


HELP: dict[str, str] = {
    "url": "the kernel session server's URL",
    "api_key": "an API key of that server (required)",
    "user": "the user whose session (kernel, files, notebook) the tools use",
    "timeout": "seconds one run_python call may run (at most the server's maximum)",
    "max_chars": "characters of text a tool result may hold",
    "http": "serve MCP over streamable HTTP instead of stdio",
    "mcp_host": "address the streamable HTTP transport listens on",
    "mcp_port": "port the streamable HTTP transport listens on",
}


def env_name(name: str) -> str:
    return f"KSS_{name.upper()}"


def parse(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> McpSettings:
    """Settings from `argv` and `environ`; exits with a usage message when one is wrong."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m kss_client.mcp",
        description="MCP server: Python in a stateful kernel of a kernel session server.",
    )
    for f in fields(McpSettings):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{HELP[f.name]} (env {env_name(f.name)}; default {f.default!r})"
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag, help=help_text)
    args = vars(parser.parse_args(argv))
    values = {}
    for f in fields(McpSettings):
        raw = args[f.name]
        if raw is None:
            raw = env.get(env_name(f.name))
        if raw is None:
            continue
        kind = type(f.default)
        try:
            values[f.name] = raw if kind is bool and isinstance(raw, bool) else _convert(kind, raw)
        except ValueError:
            parser.error(f"{f.name}: {raw!r} is not a valid {kind.__name__}")
    settings = McpSettings(**values)
    if not settings.api_key:
        parser.error(f"an API key is required: --api-key or {env_name('api_key')}")
    return settings


def _convert(kind: type, raw: str) -> object:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(raw)
    return kind(raw)
