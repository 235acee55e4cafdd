"""API keys to tenants, and the bearer token of a request (pure)."""

from server.auth import Authenticator, bearer_token


def test_auth_maps_keys_to_tenants():
    auth = Authenticator((("t1", "key-one-123"), ("t2", "key-two-456")))
    assert auth.tenant_for("key-one-123") == "t1"
    assert auth.tenant_for("key-two-456") == "t2"
    for bad in [None, "", "key-one-12", "key-one-1234", "KEY-ONE-123"]:
        assert auth.tenant_for(bad) is None
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None
