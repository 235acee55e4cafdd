"""Credentials to principals: keys, scoped tokens and signed links, and the routes each
reaches (pure: the Authenticator with a clock of the test's own)."""

from __future__ import annotations

import pytest

from server.auth import Access, Authenticator, Kind, bearer_token
from server.protocol import ProtocolError

SECRET = bytes(range(32))
KEYS = (("t1", "key-one-123"), ("t2", "key-two-456"))
NOW = 1_800_000_000.0
FILE = "/api/sessions/alice/files/chart.png"


def authenticator(keys: tuple[tuple[str, str], ...] = KEYS) -> Authenticator:
    return Authenticator(keys, SECRET, clock=lambda: NOW)


def refused(call, status: int = 401) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call()
    assert caught.value.status == status
    return caught.value


def test_auth_maps_keys_to_tenants():
    auth = authenticator()
    assert auth.tenant_for("key-one-123") == "t1"
    assert auth.tenant_for("key-two-456") == "t2"
    for bad in [None, "", "key-one-12", "key-one-1234", "KEY-ONE-123"]:
        assert auth.tenant_for(bad) is None
        assert refused(lambda bad=bad: auth.principal_for(bad)).code == "unauthorized"
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None


def test_a_key_reaches_every_route_of_its_tenant():
    key = authenticator().principal_for("key-one-123")
    assert key.kind is Kind.KEY and key.user is None and key.expires is None
    assert all(key.reaches(access, "anyone") for access in Access)
    assert key.reaches(Access.KEY, None)


def test_a_token_reaches_its_own_users_routes_and_nothing_else():
    auth = authenticator()
    key = auth.principal_for("key-one-123")
    token, expires = auth.mint(key, "alice", 600)
    assert expires == NOW + 600
    principal = auth.principal_for(token)
    assert (principal.tenant, principal.user, principal.kind) == ("t1", "alice", Kind.TOKEN)
    assert principal.expires == expires and principal.key_id == key.key_id
    assert principal.reaches(Access.USER, "alice") and principal.reaches(Access.LINK, "alice")
    assert not principal.reaches(Access.USER, "bob")
    assert not principal.reaches(Access.KEY, "alice")  # minting, listing, status
    assert not principal.reaches(Access.KEY, None)


def test_an_expired_token_says_so():
    auth = authenticator()
    token, expires = auth.mint(auth.principal_for("key-one-123"), "alice", 60)
    auth.clock = lambda: expires + 0.5
    error = refused(lambda: auth.principal_for(token))
    assert error.code == "token_expired" and token not in error.message


def test_a_token_dies_with_the_key_that_minted_it_and_survives_a_restart():
    auth = authenticator((("t1", "key-one-123"), ("t1", "key-one-other")))
    token, _ = auth.mint(auth.principal_for("key-one-123"), "alice", 600)
    assert authenticator().principal_for(token).user == "alice"  # same secret, new process
    revoked = authenticator((("t1", "key-one-other"), ("t2", "key-two-456")))
    error = refused(lambda: revoked.principal_for(token))
    assert error.code == "unauthorized" and "no longer valid" in error.message
    # The same key now given to another tenant does not carry the token over either.
    moved = authenticator((("t2", "key-one-123"),))
    refused(lambda: moved.principal_for(token))


def test_a_signed_link_opens_its_path_until_it_expires():
    auth = authenticator()
    key = auth.principal_for("key-one-123")
    url, expires = auth.signed_url(key, FILE, 300)
    path, _, query = url.partition("?")
    assert path == FILE and query.startswith(f"exp={expires}&sig=")
    sig = query.partition("&sig=")[2]
    link = auth.link_principal(FILE, str(expires), sig, "alice")
    assert (link.tenant, link.kind, link.user) == ("t1", Kind.LINK, "alice")
    assert link.reaches(Access.LINK, "alice")
    for path, exp in [
        (FILE, str(expires + 1)),  # exp edited
        (FILE.replace("chart", "other"), str(expires)),  # another file
        (FILE.replace("alice", "bob"), str(expires)),  # another user
    ]:
        error = refused(lambda p=path, e=exp: auth.link_principal(p, e, sig, "alice"), 403)
        assert error.code == "invalid_link"
    for exp in ["", "-1", "1e9", "\uff19"]:  # a full-width nine is not a digit here
        assert refused(lambda e=exp: auth.link_principal(FILE, e, sig, "x"), 403).code == (
            "invalid_link"
        )
    auth.clock = lambda: expires
    assert refused(lambda: auth.link_principal(FILE, str(expires), sig, "a"), 403).code == (
        "link_expired"
    )
    # A link dies with its key too.
    other = authenticator((("t1", "key-one-other"),))
    refused(lambda: other.link_principal(FILE, str(expires), sig, "alice"), 403)


def test_a_link_signed_with_a_token_never_outlives_it():
    auth = authenticator()
    token, token_expires = auth.mint(auth.principal_for("key-one-123"), "alice", 60)
    _, expires = auth.signed_url(auth.principal_for(token), FILE, 3600)
    assert expires == token_expires


def test_an_encoded_path_is_signed_as_its_decoded_form():
    auth = authenticator()
    key = auth.principal_for("key-one-123")
    url, expires = auth.signed_url(key, "/api/sessions/alice/files/a%20b%C3%A9.txt", 60)
    sig = url.partition("&sig=")[2]
    assert auth.link_principal("/api/sessions/alice/files/a bé.txt", str(expires), sig, "alice")
