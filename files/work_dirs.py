"""Where each user's work dir lives: `<data dir>/work/<opaque id>`.

A sandboxed kernel can read its own mount table, and a bind mount there shows its source
path: the id is an HMAC of (tenant, user) under the server's secret, so that path names
neither. The owner of each dir is written beside it (`<id>.owner`, outside the kernel's
reach), so expiry and purges can go from dirs back to users. Work dirs of the earlier
`files/<tenant>/<user>` layout are moved over once, at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_SUFFIX = ".owner"


class WorkDirs:
    """Maps (tenant, user) to an opaque work dir and back."""

    def __init__(self, root: Path, secret: bytes) -> None:
        self.root = root
        self._secret = secret
        self._owned: set[str] = set()

    def path(self, tenant: str, user: str) -> Path:
        """The user's work dir (not created); its owner record is written on first use."""
        name = hmac.new(self._secret, f"{tenant}\0{user}".encode(), hashlib.sha256).hexdigest()
        name = name[:32]
        if name not in self._owned:
            self.root.mkdir(parents=True, exist_ok=True)
            owner = self.root / (name + OWNER_SUFFIX)
            if not owner.exists():
                owner.write_text(f"{tenant}\n{user}\n")
            self._owned.add(name)
        return self.root / name

    def owners(self) -> list[tuple[str, str]]:
        """(tenant, user) of every work dir there is (blocking)."""
        found = []
        if not self.root.is_dir():
            return found
        for entry in self.root.iterdir():
            if entry.name.endswith(OWNER_SUFFIX):
                tenant, _, user = entry.read_text().strip().partition("\n")
                if (self.root / entry.name[: -len(OWNER_SUFFIX)]).is_dir():
                    found.append((tenant, user))
        return found

    def adopt_legacy(self, legacy: Path) -> int:
        """Move work dirs of the `<legacy>/<tenant>/<user>` layout here (blocking)."""
        moved = 0
        if not legacy.is_dir():
            return moved
        for tenant in legacy.iterdir():
            for user in tenant.iterdir() if tenant.is_dir() else []:
                target = self.path(tenant.name, user.name)
                if user.is_dir() and not target.exists():
                    user.rename(target)
                    moved += 1
            if tenant.is_dir() and not any(tenant.iterdir()):
                tenant.rmdir()
        if not any(legacy.iterdir()):
            legacy.rmdir()
        if moved:
            log.info("moved %d work dirs to the opaque layout under %s", moved, self.root)
        return moved
