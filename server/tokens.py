"""Scoped tokens and signed links: the two credentials a browser can hold instead of a key.

Both are HMACs under keys derived from the server's secret (`server/keys.py`), one key per
purpose, so a token's signature is never a valid link signature or the other way round, and
both survive restarts with the same data dir.

- A **token** is `kss1.<claims>.<mac>`: the claims (base64url JSON) name the tenant, the
  user, the expiry and the id of the tenant key that minted it; the mac covers them. The
  key id is itself an HMAC of the key (a holder learns nothing about the key from it), so
  removing the key from the configuration revokes its tokens.
- A **link** is a path with `?exp=<unix>&sig=<mac>`: the mac covers the key id, the tenant,
  the decoded path and `exp`, so it opens that one path until `exp`, and editing either
  breaks it. The tenant is not in the URL: a link is checked against each configured key.

Every comparison of a mac is constant-time. Nothing here logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

TOKEN_PREFIX = "kss1"


class TokenError(Exception):
    """A token or link that does not hold; `expired` when only its time ran out."""

    def __init__(self, message: str, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose, from the server's secret (HMAC with a purpose label)."""
    return hmac.new(secret, b"kss/" + purpose.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(secret: bytes, tenant: str, key: str) -> str:
    """An opaque id of one tenant key: shows in tokens, reveals nothing about the key."""
    mac = hmac.new(derive_key(secret, "key-id"), f"{tenant}\0{key}".encode(), hashlib.sha256)
    return _b64(mac.digest()[:12])


@dataclass(frozen=True)
class Claims:
    tenant: str
    user: str
    expires: int  # unix seconds
    key_id: str


class TokenCodec:
    """Encodes and checks scoped tokens (`kss1.<claims>.<mac>`)."""

    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "token")

    def _mac(self, signed: str) -> str:
        return _b64(hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest())

    def encode(self, claims: Claims) -> str:
        body = {"t": claims.tenant, "u": claims.user, "e": claims.expires, "k": claims.key_id}
        signed = f"{TOKEN_PREFIX}.{_b64(json.dumps(body, separators=(',', ':')).encode())}"
        return f"{signed}.{self._mac(signed)}"

    def decode(self, token: str, now: float) -> Claims:
        """The claims of a token whose mac holds and whose time has not run out."""
        prefix, _, rest = token.partition(".")
        body, _, mac = rest.partition(".")
        if prefix != TOKEN_PREFIX or not body or not mac or not token.isascii():
            raise TokenError("not a token")
        if not hmac.compare_digest(self._mac(f"{prefix}.{body}"), mac):
            raise TokenError("the token's signature does not match")
        try:
            raw = json.loads(_unb64(body))
            claims = Claims(str(raw["t"]), str(raw["u"]), int(raw["e"]), str(raw["k"]))
        except (ValueError, TypeError, KeyError, binascii.Error):
            raise TokenError("the token's claims cannot be read") from None
        if claims.expires <= now:
            raise TokenError("the token has expired", expired=True)
        return claims


class LinkSigner:
    """Signs and checks `?exp=&sig=` on one path."""

    def __init__(self, secret: bytes) -> None:
        self._key = derive_key(secret, "link")

    def sign(self, key_id: str, tenant: str, path: str, expires: int) -> str:
        message = f"{key_id}\0{tenant}\0{path}\0{expires}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def matches(self, key_id: str, tenant: str, path: str, expires: int, sig: str) -> bool:
        expected = self.sign(key_id, tenant, path, expires)
        return sig.isascii() and hmac.compare_digest(expected, sig)
