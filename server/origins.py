"""Which web pages may talk to the server: its own origin, and `--allowed-origins`.

Credentials here are bearer keys and tokens, never cookies, so a foreign page cannot ride on
a browser's session; still, a page's origin decides two things: whether its REST calls get
CORS headers (the preflight never needs a key), and whether its WebSocket is accepted (a
browser always sends `Origin` on one; clients that are not browsers send none and pass).
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(raw: str) -> str:
    """`scheme://host[:port]` as browsers send it (lower case, no default port), or
    ValueError."""
    try:
        parts = urlsplit(raw.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"bad origin {raw!r}") from None
    if (
        parts.scheme not in DEFAULT_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(f"bad origin {raw!r}: want scheme://host[:port], http or https")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def parse_origins(raw: str) -> frozenset[str]:
    """A comma-separated list of origins, normalized; ValueError on a bad one."""
    return frozenset(normalize_origin(item) for item in raw.split(",") if item.strip())


class Origins:
    """The server's own origin (the request's `Host`) and the configured ones."""

    def __init__(self, allowed: frozenset[str] = frozenset()) -> None:
        self.allowed = allowed

    def is_foreign_allowed(self, origin: str) -> bool:
        """A configured origin: its pages get CORS headers."""
        try:
            return normalize_origin(origin) in self.allowed
        except ValueError:
            return False  # "null" (sandboxed frames, file://) and anything malformed

    def accepts(self, origin: str, host: str) -> bool:
        """A page of the server itself (same host and port, whatever the scheme: TLS may
        end at a proxy) or of a configured origin."""
        try:
            netloc = urlsplit(origin).netloc.lower()
            same = bool(netloc) and netloc == host.lower()
        except ValueError:
            same = False
        return same or self.is_foreign_allowed(origin)
