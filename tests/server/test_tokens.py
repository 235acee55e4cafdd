"""Scoped tokens and signed links as bytes: what holds, and each way one is broken (pure)."""

from __future__ import annotations

import base64
import json

import pytest

from server.tokens import Claims, LinkSigner, TokenCodec, TokenError, derive_key, key_id

SECRET = bytes(range(32))
NOW = 1_800_000_000
CLAIMS = Claims("t1", "alice", NOW + 3600, key_id(SECRET, "t1", "key-one-123"))


def test_a_token_carries_its_claims_and_holds_until_it_expires() -> None:
    codec = TokenCodec(SECRET)
    token = codec.encode(CLAIMS)
    assert token.startswith("kss1.") and token.count(".") == 2
    assert codec.decode(token, NOW) == CLAIMS
    assert TokenCodec(SECRET).decode(token, NOW + 3599) == CLAIMS  # same secret: a restart
    with pytest.raises(TokenError) as caught:
        codec.decode(token, NOW + 3600)
    assert caught.value.expired


def test_an_edited_token_does_not_hold() -> None:
    codec = TokenCodec(SECRET)
    prefix, body, mac = codec.encode(CLAIMS).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for change in ({"u": "bob"}, {"t": "t2"}, {"e": NOW + 10**6}, {"k": "other"}):
        edited = base64.urlsafe_b64encode(json.dumps({**claims, **change}).encode()).decode()
        with pytest.raises(TokenError, match="signature") as caught:
            codec.decode(f"{prefix}.{edited.rstrip('=')}.{mac}", NOW)
        assert not caught.value.expired
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    bad = [
        f"{prefix}.{body}.{flipped}",
        f"{prefix}.{body}.",
        f"{prefix}.{body}",
        f"kss2.{body}.{mac}",
        "kss1..",
        "kss1.é.x",
        "",
        TokenCodec(bytes(32)).encode(CLAIMS),  # another server's secret
    ]
    for token in bad:
        with pytest.raises(TokenError):
            codec.decode(token, NOW)


def test_a_link_opens_one_path_of_one_tenant_until_its_time() -> None:
    links = LinkSigner(SECRET)
    kid = CLAIMS.key_id
    path = "/api/sessions/alice/files/chart.png"
    sig = links.sign(kid, "t1", path, NOW)
    assert links.matches(kid, "t1", path, NOW, sig)
    assert LinkSigner(SECRET).matches(kid, "t1", path, NOW, sig)  # a restart
    assert not links.matches(kid, "t1", path, NOW + 1, sig)  # exp edited
    assert not links.matches(kid, "t1", "/api/sessions/alice/files/other.png", NOW, sig)
    assert not links.matches(kid, "t1", "/api/sessions/bob/files/chart.png", NOW, sig)
    assert not links.matches(kid, "t2", path, NOW, sig)
    assert not links.matches("another-key", "t1", path, NOW, sig)
    assert not links.matches(kid, "t1", path, NOW, sig + "é")
    assert not LinkSigner(bytes(32)).matches(kid, "t1", path, NOW, sig)


def test_each_purpose_has_its_own_key() -> None:
    keys = {derive_key(SECRET, p) for p in ("token", "link", "key-id")}
    assert len(keys) == 3 and SECRET not in keys
    # A link's signature over a token's signed text is not that token's mac.
    token = TokenCodec(SECRET).encode(CLAIMS)
    signed, _, mac = token.rpartition(".")
    assert LinkSigner(SECRET).sign("", "", signed, 0) != mac


def test_a_key_id_names_the_key_without_revealing_it() -> None:
    kid = key_id(SECRET, "t1", "key-one-123")
    assert kid == key_id(SECRET, "t1", "key-one-123")
    assert kid != key_id(SECRET, "t1", "key-one-124")
    assert kid != key_id(SECRET, "t2", "key-one-123")
    assert kid != key_id(bytes(32), "t1", "key-one-123")
    assert "key-one" not in kid and len(kid) == 16
