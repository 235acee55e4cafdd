"""The server's own secret: made once, kept in the data dir, never sent anywhere.

Work dirs are named by an HMAC under it (`files/work_dirs.py`), so it must never change:
it is created with a link (which never replaces a file), and a secret that cannot be read
stops the server with a clear message instead of being replaced.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class BadSecret(RuntimeError):
    """The data dir's secret exists but is not one."""


def server_secret(data_dir: Path) -> bytes:
    """The server's own secret, made once and kept in the data dir (mode 0600)."""
    path = data_dir / "secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".secret.{secrets.token_hex(8)}")  # unique per caller
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_bytes(32).hex() + "\n")
        try:
            os.link(temp, path)  # never replaces a secret another process just made
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    try:
        value = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise BadSecret(f"{path} cannot be read as the server's secret: {exc}") from None
    if len(value) < 16:
        raise BadSecret(f"{path} is too short to be the server's secret")
    return value
