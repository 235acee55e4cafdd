"""The forwarding header (server/forwarding.py): signed by a replica under the shared
secret, for one method and path, for a minute; anything else is not a forwarded request."""

from __future__ import annotations

from unittest import mock

from server.forwarding import MAX_SKEW, Signer

SECRET = b"s" * 32


def test_a_forwarded_request_is_recognised_by_every_replica_and_only_as_signed() -> None:
    a, b = Signer(SECRET, "a"), Signer(SECRET, "b")
    header = a.header("POST", "/api/sessions/alice/execute")
    assert b.verify(header, "POST", "/api/sessions/alice/execute")
    assert not b.verify(header, "GET", "/api/sessions/alice/execute")
    assert not b.verify(header, "POST", "/api/sessions/bob/execute")
    assert not Signer(b"x" * 32, "b").verify(header, "POST", "/api/sessions/alice/execute")
    forged = header.replace("a ", "b ", 1)
    assert not b.verify(forged, "POST", "/api/sessions/alice/execute")
    for bad in (None, "", "a", "a 12 34 56", "a notatime ff"):
        assert not b.verify(bad, "POST", "/api/sessions/alice/execute")


def test_a_forwarding_header_is_good_for_a_minute() -> None:
    signer = Signer(SECRET, "a")
    header = signer.header("GET", "/api/sessions/u")
    stamp = int(header.split(" ")[1])
    with mock.patch("server.forwarding.time.time", return_value=stamp + MAX_SKEW + 1):
        assert not signer.verify(header, "GET", "/api/sessions/u")
    with mock.patch("server.forwarding.time.time", return_value=stamp + MAX_SKEW - 1):
        assert signer.verify(header, "GET", "/api/sessions/u")
