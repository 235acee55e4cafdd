"""The server's own secret: made once, kept in the data dir, never sent anywhere."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def server_secret(data_dir: Path) -> bytes:
    """The server's own secret, made once and kept in the data dir (mode 0600)."""
    path = data_dir / "secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(32)
    temp = path.with_name(f".secret.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value.hex() + "\n")
    try:
        os.link(temp, path)  # never replace a secret another process just made
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    finally:
        temp.unlink()
    return value
