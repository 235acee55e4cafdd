"""multipart/form-data upload bodies, parsed by the `multipart` package's push parser.

Why that library (PyPI `multipart`, defnull/multipart, MIT; 1.0 in 2024 to 2.0.1 in 2026):
`PushMultipartParser.parse(chunk)` is sans-IO and yields events (a `MultipartSegment` with
the part's parsed headers, then `bytes` of its body, then `None` at its end), so the async
handler awaits each write to the file area between events; it buffers at most one header
line and counts header lines and parts, takes a preamble and an epilogue, and its `close()`
fails a body that ended before the closing boundary. The other candidate, `python-multipart`,
calls back into a sink, hands over header names and values in pieces for us to put together,
limits parts only in its buffering `FormParser`, and its `finalize()` accepts a truncated body.
Unlike our old parser, the library refuses RFC 2046 transport padding after a boundary (so
does python-multipart) and a part without Content-Disposition (RFC 7578 requires one): 400s.

This module only configures it: the request's Content-Type, the limits, and the RFC 5987
`filename*` that the library leaves aside (RFC 7578 discourages it, but clients following
RFC 6266 send it; decoded by the standard library's RFC 2231 code).

`import multipart` is this package even beside python-multipart (the client's MCP extra pulls
it in): that one's `multipart` shim hands over to a `multipart.py` found on the path.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import collapse_rfc2231_value

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

__all__ = ["FormDataError", "MultipartSegment", "file_name", "form_parser"]

# Per part: at most 8 header lines of 2 KiB (16 KiB buffered at worst), enough for a
# 255-byte UTF-8 file name percent-encoded in `filename*` next to its fallback.
MAX_HEADER_LINE = 2048
MAX_HEADER_LINES = 8
MAX_PARTS = 1000

FormDataError = MultipartError  # anything the body or its Content-Type gets wrong

# RFC 2046: 1 to 70 of these characters, not ending with a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def form_parser(content_type: str | None, *, max_parts: int = MAX_PARTS) -> PushMultipartParser:
    """A push parser for a body sent with `content_type`, or FormDataError if it is not
    multipart/form-data with a valid boundary."""
    kind, params = parse_options_header(content_type or "")
    if kind != "multipart/form-data":
        raise FormDataError("the body must be multipart/form-data")
    boundary = params.get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary):
        raise FormDataError("multipart/form-data needs a valid boundary parameter")
    return PushMultipartParser(
        boundary,
        max_header_size=MAX_HEADER_LINE,
        max_header_count=MAX_HEADER_LINES,
        max_segment_count=max_parts,
    )


def file_name(part: MultipartSegment) -> str | None:
    """The part's file name: its `filename*` (RFC 5987) when that decodes, else `filename`;
    None for a plain form field."""
    header = Message()
    header["Content-Disposition"] = part.header("Content-Disposition", "")
    for key, value in header.get_params([], header="Content-Disposition"):
        if key == "filename" and isinstance(value, tuple):  # the decoded `filename*`
            try:
                return collapse_rfc2231_value(value, errors="strict")
            except UnicodeDecodeError:
                break
    return part.filename
