"""The web console: the static files of `server/console/` at `/` and `/console/<file>`.

No build step and nothing from a CDN: the files are served as they are in the repository,
DOMPurify vendored with its licence. Every answer carries a strict Content-Security-Policy
(scripts and styles only from these files, no inline ones, images also from `data:` and
`blob:` URLs, connections only back to this server), so kernel output that slipped past the
sanitiser still could not run. The files need no credential; the API they call does.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import tornado.web

from .errors import log_exception, write_error

log = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
HOST_RE = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,300}$")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".md": "text/plain; charset=utf-8",
}


def content_security_policy(host: str) -> str:
    """The console's CSP; the WebSocket back to `host` named, as older browsers do not
    count `ws:` as `'self'`."""
    sockets = f" ws://{host} wss://{host}" if HOST_RE.match(host) else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data: blob:; "
        f"connect-src 'self'{sockets}; "
        "font-src 'self'; manifest-src 'self'; form-action 'none'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


class ConsoleFiles(tornado.web.StaticFileHandler):
    """`GET /console/<file>`: one file of the console, with the CSP."""

    def initialize(self, state: Any = None) -> None:  # type: ignore[override]
        super().initialize(str(CONSOLE_DIR))  # needs no state: the files are static

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Content-Security-Policy", content_security_policy(self.request.host))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")  # revalidate: ETag, then 304

    def get_content_type(self) -> str:
        assert self.absolute_path is not None
        return CONTENT_TYPES.get(Path(self.absolute_path).suffix) or super().get_content_type()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        write_error(self, status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not log_exception(self, log, value):
            super().log_exception(typ, value, tb)


class ConsoleIndex(ConsoleFiles):
    """`GET /`: the console's page."""

    async def get(self, path: str = "", include_body: bool = True) -> None:
        await super().get("index.html", include_body)

    async def head(self, path: str = "") -> None:  # type: ignore[override]
        await self.get(path, include_body=False)  # the route has no path argument to pass


CONSOLE_ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    ("/", ConsoleIndex),
    ("/console/{name}", ConsoleFiles),
]
