"""What reaches the log: one line a record, as JSON or text (`--log-format`), with who it is
about; an access line per request; no key, token or signature in any line; and a flood of
one kind of record cut to a few lines per interval.

`JsonFormatter` writes one object a line: time, level, logger, message, and the tenant,
user, kernel and execution bound where the line was logged (`kernels/log_context.py`).
The access line (`log_request`, the Application's `log_function`) has method, route pattern
(`/api/sessions/{user}/files/{name}`: never the path's values nor the query, where the
WebSocket's token may be), status and duration. `Redactor` is defence in depth for
everything else: configured API keys, the metrics token and anything shaped like
`token=...`, `sig=...` or `Bearer ...` are masked in every record. `RateLimiter` stops one
client from filling the disk: records of one kind (logger, level, message template) beyond
`burst` per `interval` are dropped and counted, and one line says how many. It covers
warnings and errors from everywhere, and all of tornado's and asyncio's per-connection noise
("Malformed HTTP message", accept failures); our INFO lifecycle lines and the access log are
not limited. `configure_logging` installs all of it on the handler `python -m server` logs
to.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

import tornado.web

from kernels import log_context
from transcript.store.mongo import uri_password

from .config import Settings

access_log = logging.getLogger("tornado.access")

REDACTED = "[redacted]"
SECRET_RE = re.compile(
    r"(?i)((?:[\w-]*token|sig|signature|api[_-]?keys?|password|secret)=)[^&\s'\"]+"
    r"|(bearer\s+)[^\s'\",]+"
)
NOISY_LOGGERS = ("tornado.general", "tornado.application", "asyncio")
NUMBERS_RE = re.compile(r"0x[0-9a-fA-F]+|\d+")  # where messages formatted early differ


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access line: method, route pattern (never the path's values or the query),
    status, duration, client; the tenant and user as context fields."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    route = route_of(handler)
    duration_ms = round(1000 * request.request_time(), 1)
    fields = {
        "method": request.method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "client": request.remote_ip,
    }
    context = log_context.current()
    state = getattr(handler, "state", None)
    if state is not None:
        state.metrics.request_done(request.method, route, status, request.request_time())
    access_log.log(
        level,
        "%d %s %s %.1fms %s",
        status,
        request.method,
        route,
        duration_ms,
        request.remote_ip,
        extra={"fields": fields, "context": context},
    )


def route_of(handler: tornado.web.RequestHandler) -> str:
    """The route pattern the request matched (`/api/sessions/{user}/files/{name}`)."""
    path = handler.request.path
    for pattern, template in handler.application.settings.get("route_templates", ()):
        if pattern.fullmatch(path):
            return str(template)
    return "(unmatched)"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the context
    fields that apply, an access line's fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "context", None) or {})
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message [tenant=... user=... kernel=... execution=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        context = getattr(record, "context", None)
        if context:
            text += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return SECRET_RE.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)


class Redactor(logging.Filter):
    """Masks API keys and token-shaped values in a record's message and traceback."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)  # logging reports the bad arguments itself
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


class RateLimiter(logging.Filter):
    """At most `burst` records of one kind per `interval` seconds; then one line saying how
    many were dropped, logged through `emit` once the interval is over."""

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], Any],
        burst: int = 5,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.emit = emit
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._swept = 0.0

    def limited(self, record: logging.LogRecord) -> bool:
        if record.name == access_log.name or getattr(record, "dropped_summary", False):
            return False
        return record.levelno >= logging.WARNING or record.name.startswith(NOISY_LOGGERS)

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if now - self._swept >= 1.0:
            self._swept = now
            for key, window in list(self._windows.items()):
                if now - window.start >= self.interval:
                    del self._windows[key]
                    self._summarize(window)
        if not self.limited(record):
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        key = (record.name, record.levelno, NUMBERS_RE.sub("#", template[:200]))
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            if window is not None:
                self._summarize(window)
            self._windows[key] = _Window(now, record, template[:200])
            return True
        window.count += 1
        return window.count <= self.burst

    def flush(self) -> None:
        """Say what was dropped in the intervals still open (at exit)."""
        windows, self._windows = self._windows, {}
        for window in windows.values():
            self._summarize(window)

    def _summarize(self, window: _Window) -> None:
        dropped = window.count - self.burst
        if dropped <= 0:
            return
        name, level, pathname, lineno = window.origin
        summary = logging.LogRecord(
            name,
            level,
            pathname,
            lineno,
            "%d more like this in %.0f s were not logged: %s",
            (dropped, self.interval, window.template),
            None,
        )
        summary.dropped_summary = True
        self.emit(summary)


class _Window:
    def __init__(self, start: float, first: logging.LogRecord, template: str) -> None:
        self.start = start
        self.count = 1
        self.origin = (first.name, first.levelno, first.pathname, first.lineno)
        self.template = template


def install_filters(handler: logging.Handler, settings: Settings) -> logging.Handler:
    """Rate limit, then redaction, on `handler`."""
    handler.addFilter(RateLimiter(handler.handle))
    secrets = [key for _, key in settings.api_keys]
    secrets += [settings.metrics_token, uri_password(settings.mongodb_uri)]
    handler.addFilter(Redactor(secrets))
    return handler


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """The root logger of `python -m server`: one stream handler with both filters, the
    context fields, and the format `--log-format` asks for."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(log_context.ContextFilter())
    root = logging.getLogger()
    root.addHandler(install_filters(handler, settings))
    root.setLevel(settings.log_level.upper())
    return handler


def flush_dropped(handler: logging.Handler) -> None:
    for f in handler.filters:
        if isinstance(f, RateLimiter):
            f.flush()
