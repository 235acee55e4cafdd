"""The streaming multipart/form-data parser, on its own (no server)."""

from __future__ import annotations

import os
import random

import pytest
from tornado.httputil import HTTPHeaders, parse_body_arguments

from server.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
    parse_options,
)

BOUNDARY = "----kssBoundary7MA4YWxkTrZu0gW"


def body(parts: list[tuple[str, bytes]], boundary: str = BOUNDARY) -> bytes:
    """parts: (raw header block, data)."""
    out = b""
    for headers, data in parts:
        out += f"--{boundary}\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def file_part(filename: str, data: bytes, field: str = "files") -> tuple[str, bytes]:
    headers = (
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream"
    )
    return headers, data


def parse(raw: bytes, chunk: int, boundary: str = BOUNDARY) -> list[tuple[PartStart, bytes]]:
    parser = MultipartParser(boundary.encode())
    events = []
    for i in range(0, len(raw), chunk):
        events += parser.feed(raw[i : i + chunk])
    parser.close()
    parts: list[tuple[PartStart, bytes]] = []
    current: PartStart | None = None
    data = b""
    for event in events:
        if isinstance(event, PartStart):
            assert current is None
            current, data = event, b""
        elif isinstance(event, PartData):
            assert current is not None and event.data
            data += event.data
        else:
            assert isinstance(event, PartEnd) and current is not None
            parts.append((current, data))
            current = None
    assert current is None
    return parts


TRICKY = (
    b"starts\r\n--" + BOUNDARY[:-3].encode() + b" not quite\r\n--" + BOUNDARY.encode()[:5] + b"\r"
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 10**6])
def test_parts_survive_every_split(chunk: int) -> None:
    raw = body(
        [
            file_part("sales.csv", b"region,amount\r\nnorth,10\r\n"),
            ('Content-Disposition: form-data; name="note"', b"just a field"),
            file_part("tricky.bin", TRICKY),
            file_part("empty.txt", b""),
        ]
    )
    parts = parse(b"a preamble to ignore\r\n" + raw + b"an epilogue", chunk)
    assert [(p.name, p.filename, d) for p, d in parts] == [
        ("files", "sales.csv", b"region,amount\r\nnorth,10\r\n"),
        ("note", None, b"just a field"),
        ("files", "tricky.bin", TRICKY),
        ("files", "empty.txt", b""),
    ]
    assert parts[0][0].content_type == "application/octet-stream"


def test_agrees_with_tornados_buffering_parser_on_random_bodies() -> None:
    rng = random.Random(4)
    for _ in range(30):
        files = {
            f"f{i}.bin": bytes(rng.choice(b"\r\n-ab" + BOUNDARY.encode()) for _ in range(300))
            for i in range(rng.randint(1, 4))
        }
        raw = body([file_part(name, data, field=name) for name, data in files.items()])
        args: dict = {}
        found: dict = {}
        parse_body_arguments(
            f"multipart/form-data; boundary={BOUNDARY}", raw, args, found, HTTPHeaders()
        )
        ours = {p.filename: d for p, d in parse(raw, rng.randint(1, 500))}
        assert ours == {name: found[name][0]["body"] for name in files} == files


def test_file_names_quoted_unicode_and_extended() -> None:
    raw = body(
        [
            file_part("données 2024.csv", b"1"),
            ('Content-Disposition: form-data; name="f"; filename="say \\"hi\\".txt"', b"2"),
            (
                'Content-Disposition: form-data; name="f"; filename="fallback.txt"; '
                "filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt",
                b"3",
            ),
            ("Content-Disposition: form-data; name=f; filename=plain.txt", b"4"),
        ]
    )
    names = [p.filename for p, _ in parse(raw, 5)]
    assert names == ["données 2024.csv", 'say "hi".txt', "日本.txt", "plain.txt"]


def test_transport_padding_and_headerless_part() -> None:
    raw = (
        f"--{BOUNDARY}  \t\r\n\r\nno headers\r\n--{BOUNDARY}\r\n"
        'content-disposition: form-data; name="x";\r\n filename="folded.txt"\r\n\r\n'
        f"y\r\n--{BOUNDARY}--"
    ).encode()
    parts = parse(raw, 3)
    assert parts[0][0].headers == {} and parts[0][1] == b"no headers"
    assert parts[1][0].filename == "folded.txt" and parts[1][1] == b"y"


def test_memory_stays_bounded_while_streaming_a_big_part() -> None:
    parser = MultipartParser(BOUNDARY.encode())
    parser.feed(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="b"\r\n\r\n'.encode()
    )
    chunk = os.urandom(65536)
    total = 0
    for _ in range(160):  # 10 MB
        for event in parser.feed(chunk):
            total += len(event.data) if isinstance(event, PartData) else 0
        assert len(parser._buf) < len(BOUNDARY) + 8
    events = parser.feed(f"\r\n--{BOUNDARY}--\r\n".encode())
    total += sum(len(e.data) for e in events if isinstance(e, PartData))
    assert total == 160 * 65536 and isinstance(events[-1], PartEnd) and parser.done


@pytest.mark.parametrize(
    "raw, message",
    [
        (f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\ndata".encode(), "closing"),
        (f"--{BOUNDARY}garbage\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "garbage"),
        (f"--{BOUNDARY}\r\n".encode() + b"X-Big: " + b"a" * 20_000, "too large"),
        (f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--{BOUNDARY}--".encode(), "header line"),
        (b"no boundary at all", "closing"),
    ],
)
def test_malformed_bodies(raw: bytes, message: str) -> None:
    parser = MultipartParser(BOUNDARY.encode())
    with pytest.raises(MultipartError, match=message):
        parser.feed(raw)
        parser.close()


def test_too_many_parts() -> None:
    parser = MultipartParser(BOUNDARY.encode(), max_parts=2)
    with pytest.raises(MultipartError, match="more than 2 parts"):
        parser.feed(body([file_part(f"{i}", b"x") for i in range(3)]))


def test_boundary_of() -> None:
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY}") == BOUNDARY.encode()
    assert boundary_of('Multipart/Form-Data; charset=utf-8; boundary="a b"') == b"a b"
    for bad in (
        None,
        "application/json",
        "multipart/form-data",
        "multipart/form-data; boundary=" + "x" * 71,
    ):
        with pytest.raises(MultipartError):
            boundary_of(bad)


def test_parse_options() -> None:
    assert parse_options('attachment; filename="a;b.txt"; size=3') == (
        "attachment",
        {"filename": "a;b.txt", "size": "3"},
    )
