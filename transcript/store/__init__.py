"""Where transcripts and session records are kept: the `Store` protocol (`base.py`) and its
backends; SQLite (`sqlite.py`) is the embedded default."""
