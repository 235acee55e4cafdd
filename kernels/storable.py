"""Text that can be stored and sent: no lone UTF-16 surrogates.

JSON lets a peer write `"\\ud800"`, which Python decodes into a str that UTF-8 cannot encode:
SQLite, a WebSocket frame and a notebook file then all refuse it, and one such string once
failed a whole transcript batch for every tenant in it. Every text that enters the server
from a kernel or a client passes through here at the boundary, so the live event, the store
and the notebook all carry the same repaired text: each lone surrogate becomes U+FFFD.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON escape of a surrogate: the only way raw JSON can produce one (decoders replace
# invalid UTF-8 bytes), so raw input without it needs no walk at all.
_ESCAPED_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_ESCAPED_TEXT = re.compile(r"\\u[dD][89a-fA-F]")


def may_hold_surrogates(raw: bytes | str) -> bool:
    """Whether JSON text `raw` could decode to a lone surrogate (cheap pre-check)."""
    pattern = _ESCAPED_BYTES if isinstance(raw, bytes) else _ESCAPED_TEXT
    return pattern.search(raw) is not None  # type: ignore[arg-type]


def clean_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (the same object if none)."""
    if text.isascii() or _SURROGATE.search(text) is None:  # isascii is O(1) in CPython
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def clean(value: Any) -> Any:
    """A JSON-like value with every string (keys too) passed through `clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value
