"""Pure parsing and validation of client requests and frames; no I/O here."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from kernels.storable import clean, may_hold_surrogates

USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
EXEC_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


class ProtocolError(Exception):
    """A request the server will not take: an HTTP status, a code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class ExecuteRequest:
    code: str
    timeout: float | None = None
    id: str | None = None


@dataclass(frozen=True)
class ControlFrame:
    type: str  # "interrupt" or "restart"


def validate_user(user: str) -> str:
    if not USER_RE.match(user) or user in (".", ".."):
        raise ProtocolError(
            400, "invalid_user", "user must be 1-128 characters of A-Z a-z 0-9 . _ @ -"
        )
    return user


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """A client's JSON object; lone surrogates in its strings become U+FFFD, so what the
    client sends can always be stored and echoed (see `kernels.storable`)."""
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(400, "invalid_json", "expected a JSON object")
    return clean(value) if may_hold_surrogates(raw) else value


def parse_execute(obj: dict[str, Any], max_code_bytes: int, max_timeout: float) -> ExecuteRequest:
    """Validate the fields of an execute request (REST body or WebSocket frame)."""
    code = obj.get("code")
    if code is None:
        raise ProtocolError(400, "missing_field", "'code' is required")
    if not isinstance(code, str):
        raise ProtocolError(400, "invalid_field", "'code' must be a string")
    if len(code.encode("utf-8", "surrogatepass")) > max_code_bytes:
        raise ProtocolError(413, "payload_too_large", f"code is over {max_code_bytes} bytes")
    timeout = obj.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ProtocolError(400, "invalid_field", "'timeout' must be a number of seconds")
        if not math.isfinite(timeout) or timeout <= 0 or timeout > max_timeout:
            raise ProtocolError(
                400, "invalid_field", f"'timeout' must be > 0 and at most {max_timeout:g}"
            )
    exec_id = obj.get("id")
    if exec_id is not None and (not isinstance(exec_id, str) or not EXEC_ID_RE.match(exec_id)):
        raise ProtocolError(
            400, "invalid_field", "'id' must be 1-128 characters of A-Z a-z 0-9 . _ : @ -"
        )
    return ExecuteRequest(code=code, timeout=timeout, id=exec_id)


def parse_frame(
    raw: str | bytes, max_code_bytes: int, max_timeout: float
) -> ExecuteRequest | ControlFrame:
    """One WebSocket client frame -> a request, or ProtocolError."""
    if isinstance(raw, bytes):
        raise ProtocolError(400, "invalid_frame", "binary frames are not accepted; send JSON text")
    obj = parse_json_object(raw)
    kind = obj.get("type")
    if kind is None:
        raise ProtocolError(400, "missing_field", "'type' is required")
    if kind == "execute":
        return parse_execute(obj, max_code_bytes, max_timeout)
    if kind in ("interrupt", "restart"):
        return ControlFrame(kind)
    raise ProtocolError(
        400,
        "unknown_type",
        f"unknown frame type {str(kind)[:40]!r}; want execute, interrupt, restart",
    )


def parse_since(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ProtocolError(400, "invalid_since", "'since' must be a non-negative integer")
    return int(raw)
