"""Parsing and validation of requests and frames (pure)."""

import pytest

from server.protocol import (
    ControlFrame,
    ExecuteRequest,
    ProtocolError,
    frame_object,
    parse_content_length,
    parse_count,
    parse_execute,
    parse_frame,
    parse_since,
    validate_user,
)


@pytest.mark.parametrize("user", ["alice", "a.b-c_d@e", "x" * 128, "0"])
def test_valid_users(user):
    assert validate_user(user) == user


@pytest.mark.parametrize(
    "user", ["", "x" * 129, "a/b", "..", ".", "a b", "ä", "a\x00b", "a%2fb", "a\nb"]
)
def test_invalid_users(user):
    with pytest.raises(ProtocolError) as err:
        validate_user(user)
    assert err.value.status == 400 and err.value.code == "invalid_user"


def frame(raw):
    return parse_frame(frame_object(raw), max_code_bytes=100, max_timeout=60)


def test_frames():
    assert frame('{"type":"execute","id":"a1","code":"1"}') == ExecuteRequest("1", None, "a1")
    assert frame('{"type":"interrupt"}') == ControlFrame("interrupt")
    assert frame('{"type":"restart"}') == ControlFrame("restart")


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        ("not json", 400, "invalid_json"),
        ("[1,2]", 400, "invalid_json"),
        ("{}", 400, "missing_field"),
        ('{"type":"explode"}', 400, "unknown_type"),
        ('{"type":"execute"}', 400, "missing_field"),
        ('{"type":"execute","code":5}', 400, "invalid_field"),
        ('{"type":"execute","code":"1","timeout":"soon"}', 400, "invalid_field"),
        ('{"type":"execute","code":"1","timeout":-1}', 400, "invalid_field"),
        ('{"type":"execute","code":"1","timeout":1e9}', 400, "invalid_field"),
        ('{"type":"execute","code":"1","timeout":true}', 400, "invalid_field"),
        ('{"type":"execute","code":"1","timeout":1' + "0" * 400 + "}", 400, "invalid_field"),
        ('{"type":"execute","code":"1","timeout":NaN}', 400, "invalid_field"),
        ("[" * 100_000 + "]" * 100_000, 400, "invalid_json"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, 400, "invalid_json"),
        ('{"type":"execute","code":"1","id":"has space"}', 400, "invalid_field"),
        ('{"type":"execute","code":"' + "x" * 101 + '"}', 413, "payload_too_large"),
        (b'{"type":"execute","code":"1"}', 400, "invalid_frame"),
        (b"\xff\xfe", 400, "invalid_frame"),
    ],
)
def test_bad_frames(raw, status, code):
    with pytest.raises(ProtocolError) as err:
        frame(raw)
    assert (err.value.status, err.value.code) == (status, code)
    assert err.value.body()["error"]["message"]


def test_code_limit_counts_utf8_bytes():
    parse_execute({"code": "é" * 50}, max_code_bytes=100, max_timeout=1)
    with pytest.raises(ProtocolError):
        parse_execute({"code": "é" * 51}, max_code_bytes=100, max_timeout=1)


def test_since():
    assert parse_since(None) is None
    assert parse_since("12") == 12
    for bad in ["-1", "x", "1.5", "9" * 30, "\u00b2", "\u0661", "", " 1", "+1", "1_000"]:
        with pytest.raises(ProtocolError):
            parse_since(bad)


def test_counts_are_ascii_digits_of_bounded_length():
    assert parse_count("0") == 0 and parse_count("9" * 18) == 10**18 - 1
    for bad in ["\u00b2", "\u0661", "\uff11", "9" * 19, "", "-1", "1 ", "0x10"]:
        assert parse_count(bad) is None, bad


def test_content_length():
    assert parse_content_length(None) is None
    assert parse_content_length("42") == 42
    assert parse_content_length("42, 42") == 42  # a proxy repeated it
    for bad in ["-5", "5, 6", "\u00b2", "", "1e3", "9" * 30]:
        with pytest.raises(ProtocolError) as err:
            parse_content_length(bad)
        assert (err.value.status, err.value.code) == (400, "bad_request")
