"""Session metadata storage: a `Store` protocol, SQLite by default, MongoDB optionally."""

from .base import CellRecord, SessionRecord, Store

__all__ = ["CellRecord", "SessionRecord", "Store"]
