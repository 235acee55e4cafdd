"""API keys -> tenant, compared in constant time."""

from __future__ import annotations

import hmac

import tornado.web

from .protocol import ProtocolError


class Authenticator:
    """Maps a bearer token to its tenant; every key is compared, in constant time."""

    def __init__(self, api_keys: tuple[tuple[str, str], ...]) -> None:
        self._keys = [(tenant, key.encode()) for tenant, key in api_keys]

    def tenant_for(self, token: str | None) -> str | None:
        if not token:
            return None
        given = token.encode()
        found = None
        for tenant, key in self._keys:
            if hmac.compare_digest(given, key) and found is None:
                found = tenant
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authenticate(
    handler: tornado.web.RequestHandler, auth: Authenticator, allow_query: bool
) -> str:
    """The tenant of the request's bearer key (or `?token=` where allowed), else a 401."""
    token = bearer_token(handler.request.headers.get("Authorization"))
    if token is None and allow_query:
        token = handler.get_query_argument("token", None)
    tenant = auth.tenant_for(token)
    if tenant is None:
        handler.set_header("WWW-Authenticate", 'Bearer realm="kss"')
        raise ProtocolError(401, "unauthorized", "a valid API key is required")
    return tenant
