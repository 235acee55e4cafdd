"""A small push parser for `multipart/form-data` bodies that never holds a part whole.

Feed it the body as it arrives; it returns events (`PartStart`, `PartData`, `PartEnd`), so
a handler can stream each file part straight into an upload. Memory is bounded by the
largest chunk fed plus one part's headers. Written here rather than taken from PyPI: it is
~150 lines of pure code, and a push interface returning events (not callbacks into a sink)
lets the async handler await between writes.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_PARTS = 1000


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True)
class PartStart:
    name: str | None
    filename: str | None
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


class _State(enum.Enum):
    PREAMBLE = "preamble"
    AFTER_BOUNDARY = "after_boundary"
    HEADERS = "headers"
    BODY = "body"
    EPILOGUE = "epilogue"


_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")


def parse_options(value: str) -> tuple[str, dict[str, str]]:
    """`form-data; name="a"; filename*=UTF-8''x%20y` -> ("form-data", {...}), keys lowered,
    quotes removed, RFC 5987 `key*` values decoded and preferred over plain `key`."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    for key, raw in _PARAM_RE.findall(";" + rest):
        key = key.lower()
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if key.endswith("*"):
            charset, _, encoded = raw.partition("'")
            _lang, _, encoded = encoded.partition("'")
            try:
                extended[key[:-1]] = unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                continue
        else:
            params[key] = raw
    params.update(extended)
    return main.strip().lower(), params


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or MultipartError."""
    kind, params = parse_options(content_type or "")
    if kind != "multipart/form-data":
        raise MultipartError("the body must be multipart/form-data")
    boundary = params.get("boundary", "")
    if not _BOUNDARY_RE.match(boundary) or boundary.endswith(" "):
        raise MultipartError("multipart/form-data needs a valid boundary parameter")
    return boundary.encode("ascii")


class MultipartParser:
    """Push parser: `feed(chunk) -> events`, then `close()` once the body has ended."""

    def __init__(
        self,
        boundary: bytes,
        *,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_parts: int = MAX_PARTS,
    ) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts
        self._parts = 0
        # A CRLF in front lets the first boundary match the same delimiter as the others.
        self._buf = bytearray(b"\r\n")
        self._state = _State.PREAMBLE

    @property
    def done(self) -> bool:
        """True once the closing boundary has been seen."""
        return self._state is _State.EPILOGUE

    def feed(self, data: bytes) -> list[Event]:
        if self._state is _State.EPILOGUE:
            return []
        self._buf += data
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        """Raise MultipartError unless the body ended with its closing boundary."""
        if self._state is not _State.EPILOGUE:
            raise MultipartError("the multipart body ended before its closing boundary")

    def _step(self, events: list[Event]) -> bool:
        """Advance by one state if the buffer allows; False when more data is needed."""
        buf, delim = self._buf, self._delimiter
        if self._state is _State.PREAMBLE:
            at = buf.find(delim)
            if at < 0:
                del buf[: max(0, len(buf) - len(delim) + 1)]
                return False
            del buf[: at + len(delim)]
            self._state = _State.AFTER_BOUNDARY
            return True
        if self._state is _State.AFTER_BOUNDARY:
            if len(buf) < 2:
                return False
            if buf.startswith(b"--"):
                self._state = _State.EPILOGUE
                buf.clear()
                return False
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 256:
                    raise MultipartError("garbage after a multipart boundary")
                return False
            if buf[:end].strip(b" \t"):
                raise MultipartError("garbage after a multipart boundary")
            del buf[: end + 2]
            self._state = _State.HEADERS
            return True
        if self._state is _State.HEADERS:
            end = 0 if buf.startswith(b"\r\n") else buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max_header_bytes:
                    raise MultipartError("a multipart part's headers are too large")
                return False
            if end > self._max_header_bytes:
                raise MultipartError("a multipart part's headers are too large")
            self._parts += 1
            if self._parts > self._max_parts:
                raise MultipartError(f"more than {self._max_parts} parts")
            raw = bytes(buf[:end])
            del buf[: end + (2 if end == 0 else 4)]
            events.append(_part_start(raw))
            self._state = _State.BODY
            return True
        if self._state is _State.BODY:
            at = buf.find(delim)
            if at >= 0:
                if at:
                    events.append(PartData(bytes(buf[:at])))
                events.append(PartEnd())
                del buf[: at + len(delim)]
                self._state = _State.AFTER_BOUNDARY
                return True
            # Keep a tail that could be the start of a delimiter split across chunks.
            safe = len(buf) - len(delim) + 1
            if safe > 0:
                events.append(PartData(bytes(buf[:safe])))
                del buf[:safe]
            return False
        return False


def _part_start(raw: bytes) -> PartStart:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    headers: dict[str, str] = {}
    last = ""
    for line in text.split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and last:  # obsolete folding
            headers[last] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(f"bad multipart header line {line[:80]!r}")
        last = key.strip().lower()
        headers[last] = value.strip()
    _, params = parse_options(headers.get("content-disposition", ""))
    return PartStart(
        name=params.get("name"),
        filename=params.get("filename"),
        content_type=headers.get("content-type"),
        headers=headers,
    )
