"""Who is asking, and may they use this route: an API key (its whole tenant), a scoped token
(one user of one tenant) or a signed link (one path). Keys are compared in constant time;
tokens and links are checked by `server/tokens.py`.

Each route says which credentials it takes (`Access`); `authenticate` answers a credential
that does not reach the route exactly as it answers a wrong key, so a token says nothing
about routes outside its scope.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, unquote

import tornado.web

from .protocol import ProtocolError, parse_count
from .tokens import TOKEN_PREFIX, Claims, LinkSigner, TokenCodec, TokenError, key_id

DEFAULT_TTL = 3600  # seconds a token or link lives unless asked otherwise
UNAUTHORIZED = "a valid API key or token is required"


class Kind(Enum):
    KEY = "key"
    TOKEN = "token"
    LINK = "link"


class Access(Enum):
    """The credentials a route takes."""

    KEY = "key"  # the tenant's API key only (tenant-wide routes, minting tokens)
    USER = "user"  # the key, or a token of the user the route names
    LINK = "link"  # as USER, and on GET a signed link to this very path


@dataclass(frozen=True)
class Principal:
    tenant: str
    kind: Kind
    key_id: str  # the tenant key behind the credential
    user: str | None = None  # the one user a token or link may act for; None: any user
    expires: int | None = None  # when a token or link stops working (unix seconds)

    def reaches(self, access: Access, user: str | None) -> bool:
        if self.kind is Kind.KEY:
            return True
        return access is not Access.KEY and user is not None and user == self.user


class Authenticator:
    """Maps a credential to its `Principal`; mints tokens and signs links."""

    def __init__(
        self,
        api_keys: tuple[tuple[str, str], ...],
        secret: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = [
            (tenant, key.encode(), key_id(secret, tenant, key)) for tenant, key in api_keys
        ]
        self._tenant_of = {kid: tenant for tenant, _, kid in self._keys}
        self._tokens = TokenCodec(secret)
        self._links = LinkSigner(secret)
        self.clock = clock

    def tenant_for(self, key: str | None) -> str | None:
        principal = self._key_principal(key)
        return None if principal is None else principal.tenant

    def _key_principal(self, key: str | None) -> Principal | None:
        if not key:
            return None
        given = key.encode()
        found = None
        for tenant, expected, kid in self._keys:  # every key compared, whatever matches
            if hmac.compare_digest(given, expected) and found is None:
                found = Principal(tenant, Kind.KEY, kid)
        return found

    def principal_for(self, credential: str | None) -> Principal:
        """The principal of a key or a token, else a 401 saying why."""
        principal = self._key_principal(credential)
        if principal is not None:
            return principal
        if credential is None or not credential.startswith(TOKEN_PREFIX + "."):
            raise unauthorized(UNAUTHORIZED)
        try:
            claims = self._tokens.decode(credential, self.clock())
        except TokenError as exc:
            if exc.expired:
                raise unauthorized(
                    "the token has expired; mint a new one", "token_expired"
                ) from None
            raise unauthorized(f"the token is not valid: {exc}") from None
        if self._tenant_of.get(claims.key_id) != claims.tenant:
            raise unauthorized("the token was minted with an API key that is no longer valid")
        return Principal(claims.tenant, Kind.TOKEN, claims.key_id, claims.user, claims.expires)

    def mint(self, principal: Principal, user: str, ttl: float) -> tuple[str, int]:
        """A token for `user` of the principal's tenant, and when it expires."""
        expires = int(self.clock() + ttl)
        claims = Claims(principal.tenant, user, expires, principal.key_id)
        return self._tokens.encode(claims), expires

    def signed_url(self, principal: Principal, url: str, ttl: float) -> tuple[str, int]:
        """`url` (a path, percent-encoded) with `exp` and `sig`; never outlives the
        principal's own credential."""
        expires = int(self.clock() + ttl)
        if principal.expires is not None:
            expires = min(expires, principal.expires)
        sig = self._links.sign(principal.key_id, principal.tenant, unquote(url), expires)
        return f"{url}?exp={expires}&sig={quote(sig)}", expires

    def link_principal(self, path: str, exp: str, sig: str, user: str | None) -> Principal:
        """The principal of a signed link to `path` (decoded), else a 403 saying why."""
        expires = parse_count(exp)
        if expires is None:
            raise ProtocolError(403, "invalid_link", "the link's 'exp' must be a unix time")
        found = None
        for tenant, _, kid in self._keys:  # the tenant is not in the link: try each key
            if self._links.matches(kid, tenant, path, expires, sig) and found is None:
                found = Principal(tenant, Kind.LINK, kid, user, expires)
        if found is None:
            raise ProtocolError(
                403, "invalid_link", "the link's signature does not match this path and time"
            )
        if expires <= self.clock():
            raise ProtocolError(403, "link_expired", "the link has expired; ask for a new one")
        return found


def unauthorized(message: str, code: str = "unauthorized") -> ProtocolError:
    return ProtocolError(401, code, message)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authenticate(
    handler: tornado.web.RequestHandler,
    auth: Authenticator,
    access: Access,
    user: str | None = None,
    allow_query: bool = False,
) -> Principal:
    """The principal of the request's credential (bearer key or token, `?token=` where
    allowed, a signed link where the route takes one) if it reaches the route (`access`,
    and `user`, the user the route names), else a 401 (a 403 for a bad link)."""
    request = handler.request
    credential = bearer_token(request.headers.get("Authorization"))
    if credential is None and allow_query:
        credential = handler.get_query_argument("token", None)
    sig = handler.get_query_argument("sig", None)
    if credential is None and sig is not None and access is Access.LINK:
        if request.method not in ("GET", "HEAD"):
            raise unauthorized(UNAUTHORIZED)  # a link only ever reads
        exp = handler.get_query_argument("exp", "")
        principal = auth.link_principal(unquote(request.path), exp, sig, user)
    else:
        principal = auth.principal_for(credential)
    if not principal.reaches(access, user):
        raise unauthorized(UNAUTHORIZED)  # as a wrong key: nothing about the scope
    return principal
