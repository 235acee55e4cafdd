"""Storable text: lone surrogates become U+FFFD wherever text enters (pure)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from kernels.storable import REPLACEMENT, clean, clean_text, may_hold_surrogates

LONE = json.loads('"a\\ud800b"')  # what a peer's JSON can decode to


def test_a_lone_surrogate_becomes_the_replacement_character() -> None:
    assert clean_text(LONE) == f"a{REPLACEMENT}b"
    assert clean_text("\udfff\ud800") == REPLACEMENT * 2
    repaired = clean_text(LONE)
    repaired.encode()  # UTF-8 takes it now
    sqlite3.connect(":memory:").execute("SELECT ?", (repaired,)).fetchall()
    with pytest.raises(UnicodeEncodeError):
        LONE.encode()


@pytest.mark.parametrize(
    "text", ["plain ascii", "", "ünïcødé ✓ 🚀", json.loads('"\\ud83d\\ude80"')]
)
def test_text_without_lone_surrogates_is_returned_as_is(text: str) -> None:
    assert clean_text(text) is text


def test_clean_walks_keys_values_lists_and_tuples() -> None:
    value = {
        LONE: [LONE, ("x", LONE)],
        "n": 1,
        "f": 1.5,
        "none": None,
        "nested": {"deep": [{"k": LONE}]},
        7: "seven",
    }
    fixed = f"a{REPLACEMENT}b"
    assert clean(value) == {
        fixed: [fixed, ["x", fixed]],
        "n": 1,
        "f": 1.5,
        "none": None,
        "nested": {"deep": [{"k": fixed}]},
        7: "seven",
    }
    json.dumps(clean(value), ensure_ascii=False).encode()
    assert clean(b"\xff") == b"\xff"  # not text: untouched


@pytest.mark.parametrize(
    ("raw", "may"),
    [
        ('"a\\ud800b"', True),
        ('"\\uDC00"', True),
        ('"\\udBff"', True),
        ('"\\ud83d\\ude80"', True),  # a valid pair: a false positive, which is allowed
        ('"\\u00e9 \\ud7ff \\ue000"', False),  # next to the surrogate range, outside it
        ('"\\\\ud800"', True),  # an escaped backslash: cheap check errs on the safe side
        ('{"text": "plain"}', False),
        ("", False),
    ],
)
def test_may_hold_surrogates_on_bytes_and_text(raw: str, may: bool) -> None:
    assert may_hold_surrogates(raw) is may
    assert may_hold_surrogates(raw.encode()) is may


def test_the_pre_check_never_misses_what_clean_would_repair() -> None:
    for code in (0xD800, 0xDABC, 0xDBFF, 0xDC00, 0xDFFF):
        raw = json.dumps(chr(code))  # json.dumps escapes it: "\udxxx"
        assert may_hold_surrogates(raw) and may_hold_surrogates(raw.encode())
        assert clean_text(json.loads(raw)) == REPLACEMENT
