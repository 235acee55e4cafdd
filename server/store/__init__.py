"""Session metadata storage: a `Store` protocol, SQLite by default, MongoDB optionally."""

from .base import SessionRecord, Store

__all__ = ["SessionRecord", "Store"]
