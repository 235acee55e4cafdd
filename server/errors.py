"""Domain error -> HTTP status, and the one JSON error writer (REST and WebSocket upgrade).

The kernel layer and the file area raise their own errors, each with a stable `code`; this
table is the only place they meet HTTP. Every error the server answers is
`{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import errno
import json
import logging
from typing import Any

import tornado.web
from tornado.httputil import responses

from files.errors import (
    BadBundle,
    BadFileName,
    FileAreaError,
    FileAreaPurged,
    FileBusy,
    FileNotFound,
    FileTooLarge,
    QuotaExceeded,
)
from kernels.errors import (
    CapacityExceeded,
    Draining,
    KernelError,
    KernelStartFailed,
    PackagesDisabled,
    QueueFull,
    SessionClosed,
    SessionElsewhere,
    SessionNotFound,
)
from packages.errors import (
    PackageError,
    PackageInstallFailed,
    PackageInstallTimeout,
    PackageRefused,
)
from transcript.store.base import StoreUnavailable

from .protocol import ProtocolError

# Descriptors or memory ran out: the server's state, not the request's fault, and passing.
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)

DOMAIN_STATUS: dict[type[Exception], int] = {
    BadBundle: 400,
    BadFileName: 400,
    FileNotFound: 404,  # and FileExpired
    FileBusy: 409,
    FileAreaPurged: 409,
    FileTooLarge: 413,
    QuotaExceeded: 413,
    SessionNotFound: 404,
    SessionClosed: 409,
    QueueFull: 429,
    CapacityExceeded: 503,
    Draining: 503,
    KernelStartFailed: 503,
    PackageRefused: 403,
    PackagesDisabled: 403,
    PackageInstallFailed: 422,
    PackageInstallTimeout: 504,
    SessionElsewhere: 503,  # a forwarded request whose user moved on meanwhile
}


# Seconds a client should wait before trying again, by error code (else 5).
RETRY_AFTER = {"queue_full": 1, "server_busy": 1, "draining": 10}


def error_status(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, message) for any exception a handler lets escape."""
    if isinstance(exc, ProtocolError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, KernelError | FileAreaError | PackageError):
        status = next((DOMAIN_STATUS[t] for t in type(exc).__mro__ if t in DOMAIN_STATUS), 500)
        return status, exc.code, str(exc)
    if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES:
        return 503, "server_busy", "the server is short of resources; try again shortly"
    if isinstance(exc, StoreUnavailable):
        return 503, exc.code, "the store is unreachable; try again shortly"
    if isinstance(exc, tornado.web.HTTPError):
        code = responses.get(exc.status_code, "error").lower().replace(" ", "_")
        message = exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
        return exc.status_code, code, message or responses.get(exc.status_code, "error")
    return 500, "internal_error", "internal server error"


def error_body(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code.replace(" ", "_"), "message": message}})


def write_error(handler: tornado.web.RequestHandler, status_code: int, **kwargs: Any) -> None:
    """`RequestHandler.write_error` for every handler: the JSON error of what escaped."""
    exc_info = kwargs.get("exc_info")
    if exc_info is not None and exc_info[1] is not None:
        status, code, message = error_status(exc_info[1])
    else:
        status, message = status_code, responses.get(status_code, "error")
        code = message.lower()
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json; charset=utf-8")
    if status in (429, 503):  # passing: say when to come back (a drain: to another server)
        handler.set_header("Retry-After", str(RETRY_AFTER.get(code, 5)))
    if status == 401:  # here, not where auth failed: `send_error` cleared the headers since
        handler.set_header("WWW-Authenticate", 'Bearer realm="kss"')
    body_future = getattr(handler.request, "_body_future", None)
    if body_future is not None and not body_future.done():  # answered before the body
        handler.set_header("Connection", "close")
    handler.finish(error_body(code, message))


def log_exception(
    handler: tornado.web.RequestHandler, log: logging.Logger, value: BaseException
) -> bool:
    """Log an expected failure as one line; False when it is a bug to log with traceback."""
    where = f"{handler.request.method} {handler.request.path}"
    expected = ProtocolError | KernelError | FileAreaError | PackageError | tornado.web.HTTPError
    if isinstance(value, expected):
        log.info("%s -> %s", where, value)
        return True
    if isinstance(value, OSError) and value.errno in OUT_OF_RESOURCES:
        log.error("%s -> 503: %s", where, value.strerror)
        return True
    if isinstance(value, StoreUnavailable):
        log.warning("%s -> 503: %s", where, value)
        return True
    return False
