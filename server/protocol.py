"""Pure parsing and validation of client requests and frames; no I/O here."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kernels.storable import clean, may_hold_surrogates

USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
EXEC_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
MAX_PACKAGES = 20  # requirements in one request
ASCII_DIGITS_RE = re.compile(r"[0-9]+")  # not isdigit(): it takes superscripts, other scripts
MAX_DIGITS = 18  # every count we take fits in 63 bits


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
    install_packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ControlFrame:
    type: str  # "interrupt" or "restart"


def validate_user(user: str) -> str:
    if not USER_RE.match(user) or user in (".", ".."):
        raise ProtocolError(
            400, "invalid_user", "user must be 1-128 characters of A-Z a-z 0-9 . _ @ -"
        )
    return user


def parse_count(raw: str, max_digits: int = MAX_DIGITS) -> int | None:
    """A non-negative integer written in 1..max_digits ASCII digits, else None. The one way
    the server reads a number from client text (query values, Content-Length)."""
    if len(raw) > max_digits or not ASCII_DIGITS_RE.fullmatch(raw):
        return None
    return int(raw)


def parse_content_length(raw: str | None) -> int | None:
    """The body length a request declares (None: no Content-Length). Identical repeated
    values are one value (proxies repeat it); anything else is a 400."""
    if raw is None:
        return None
    values = {v.strip() for v in raw.split(",")}
    length = parse_count(values.pop()) if len(values) == 1 else None
    if length is None:
        raise ProtocolError(400, "bad_request", "Content-Length must be one non-negative integer")
    return length


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """A JSON object from a REST body or a WebSocket frame, or a 400 `invalid_json`. Lone
    surrogates in its strings become U+FFFD, so what a client sends can always be stored and
    echoed (see `kernels.storable`)."""
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(400, "invalid_json", "the body is not valid JSON") from None
    except RecursionError:
        raise ProtocolError(400, "invalid_json", "the JSON is nested too deeply") from None
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
        if not 0 < timeout <= max_timeout:  # also false for nan, inf and huge integers
            raise ProtocolError(
                400, "invalid_field", f"'timeout' must be > 0 and at most {max_timeout:g}"
            )
    exec_id = obj.get("id")
    if exec_id is not None and (not isinstance(exec_id, str) or not EXEC_ID_RE.match(exec_id)):
        raise ProtocolError(
            400, "invalid_field", "'id' must be 1-128 characters of A-Z a-z 0-9 . _ : @ -"
        )
    install = parse_packages(obj.get("install_packages", []), "install_packages")
    return ExecuteRequest(code=code, timeout=timeout, id=exec_id, install_packages=install)


def parse_packages(value: Any, field: str = "packages") -> tuple[str, ...]:
    """A list of at most MAX_PACKAGES requirement strings (the allowlist judges them)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(400, "invalid_field", f"'{field}' must be a list of package names")
    if len(value) > MAX_PACKAGES or any(not 0 < len(v) <= 200 for v in value):
        raise ProtocolError(
            400, "invalid_field", f"'{field}' takes 1-{MAX_PACKAGES} names of 1-200 characters"
        )
    return tuple(value)


def frame_object(raw: str | bytes) -> dict[str, Any]:
    """The JSON object of one WebSocket client frame, or ProtocolError."""
    if isinstance(raw, bytes):
        raise ProtocolError(400, "invalid_frame", "binary frames are not accepted; send JSON text")
    return parse_json_object(raw)


def parse_frame(
    obj: dict[str, Any], max_code_bytes: int, max_timeout: float
) -> ExecuteRequest | ControlFrame:
    """One WebSocket client frame's object -> a request, or ProtocolError."""
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


def parse_on_off(name: str, raw: str | None, default: bool) -> bool:
    """A query flag: on/off, true/false, 1/0."""
    if raw is None:
        return default
    value = raw.lower()
    if value in ("on", "true", "1"):
        return True
    if value in ("off", "false", "0"):
        return False
    raise ProtocolError(400, "invalid_field", f"'{name}' must be on or off")


def parse_since(raw: str | None) -> int | None:
    if raw is None:
        return None
    since = parse_count(raw)
    if since is None:
        raise ProtocolError(400, "invalid_since", "'since' must be a non-negative integer")
    return since
