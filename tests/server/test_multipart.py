"""Multipart uploads: the contract our own parser had, now kept by the `multipart` package's
push parser as `server.form_data` configures it (every split point, bodies holding the
boundary's text, file names, limits as bytes arrive), and by `POST .../files` over real HTTP
(all or nothing, a clear 400 for each malformed body, 413 while a part still arrives)."""

from __future__ import annotations

import json
import os
import random
import socket
import tracemalloc

import pytest
from tornado.httputil import HTTPHeaders, parse_body_arguments
from tornado.iostream import IOStream

from server.form_data import (
    MAX_HEADER_LINE,
    MAX_PARTS,
    FormDataError,
    MultipartSegment,
    file_name,
    form_parser,
)
from tests.server import test_files_http as files_http_tests
from tests.server.test_files_http import (
    KEY,
    MB,
    Server,
    error_of,
    leftovers,
    producer,
    refused_while_sending,
)

srv = files_http_tests.srv  # the fixture: the file routes on a real tornado server

BOUNDARY = "----kssBoundary7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
FILES = "/api/sessions/alice/files"


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


def parse_chunks(chunks: list[bytes], **kw) -> list[tuple[MultipartSegment, bytes]]:
    """Feed `chunks` to a fresh parser; every part's headers with its whole body."""
    parser = form_parser(CONTENT_TYPE, **kw)
    events: list = []
    for chunk in chunks:
        events += parser.parse(chunk)
    parser.close()
    parts: list[tuple[MultipartSegment, bytes]] = []
    current: MultipartSegment | None = None
    data = b""
    for event in events:
        if isinstance(event, MultipartSegment):
            assert current is None
            current, data = event, b""
        elif event is None:
            assert current is not None
            parts.append((current, data))
            current = None
        else:
            assert current is not None and isinstance(event, bytes) and event
            data += event
    assert current is None
    return parts


def parse(raw: bytes, chunk: int, **kw) -> list[tuple[MultipartSegment, bytes]]:
    return parse_chunks([raw[i : i + chunk] for i in range(0, len(raw), chunk)], **kw)


TRICKY = (
    b"starts\r\n--" + BOUNDARY[:-3].encode() + b" not quite\r\n--" + BOUNDARY.encode()[:5] + b"\r"
)
FORM = (
    b"a preamble to ignore\r\n"
    + body(
        [
            file_part("sales.csv", b"region,amount\r\nnorth,10\r\n"),
            ('Content-Disposition: form-data; name="note"', b"just a field"),
            file_part("tricky.bin", TRICKY),
            file_part("empty.txt", b""),
        ]
    )
    + b"an epilogue"
)
FORM_PARTS = [
    ("files", "sales.csv", b"region,amount\r\nnorth,10\r\n"),
    ("note", None, b"just a field"),
    ("files", "tricky.bin", TRICKY),
    ("files", "empty.txt", b""),
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 10**6])
def test_parts_survive_every_chunk_size(chunk: int) -> None:
    parts = parse(FORM, chunk)
    assert [(p.name, file_name(p), d) for p, d in parts] == FORM_PARTS
    assert parts[0][0].content_type == "application/octet-stream"


def test_parts_survive_a_split_at_every_byte() -> None:
    for at in range(1, len(FORM)):
        parts = parse_chunks([FORM[:at], FORM[at:]])
        assert [(p.name, file_name(p), d) for p, d in parts] == FORM_PARTS, at


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
        parse_body_arguments(CONTENT_TYPE, raw, args, found, HTTPHeaders())
        ours = {file_name(p): d for p, d in parse(raw, rng.randint(1, 500))}
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
            ('Content-Disposition: form-data; name="f"; filename="a;b.txt"; size=3', b"5"),
            (  # a `filename*` that does not decode leaves the plain name
                'Content-Disposition: form-data; name="f"; filename="plain2.txt"; '
                "filename*=UTF-8''%FF%FE.txt",
                b"6",
            ),
            ('Content-Disposition: form-data; name="f"; filename=""', b"7"),
        ]
    )
    names = [file_name(p) for p, _ in parse(raw, 5)]
    assert names == [
        "données 2024.csv",
        'say "hi".txt',
        "日本.txt",
        "plain.txt",
        "a;b.txt",
        "plain2.txt",
        "",  # a file part with an empty name: refused by the file area, not ignored
    ]


def test_folded_header_line() -> None:
    raw = (
        f"--{BOUNDARY}\r\n"
        'content-disposition: form-data; name="x";\r\n filename="folded.txt"\r\n\r\n'
        f"y\r\n--{BOUNDARY}--"
    ).encode()
    [(part, data)] = parse(raw, 3)
    assert file_name(part) == "folded.txt" and data == b"y"


def test_memory_stays_bounded_while_streaming_a_big_part() -> None:
    parser = form_parser(CONTENT_TYPE)
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="b"\r\n\r\n'
    chunk = os.urandom(65536)
    total = 0
    tracemalloc.start()
    try:
        [segment] = parser.parse(head.encode())
        assert isinstance(segment, MultipartSegment)
        for _ in range(160):  # 10 MB
            total += sum(len(e) for e in parser.parse(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    events = list(parser.parse(f"\r\n--{BOUNDARY}--\r\n".encode()))
    total += sum(len(e) for e in events if isinstance(e, bytes))
    parser.close()  # complete
    assert total == 160 * 65536 and events[-1] is None
    assert peak < 1 * MB, f"peak traced memory {peak / MB:.1f} MB while parsing 10 MB"


def test_header_limit_holds_as_bytes_arrive() -> None:
    parser = form_parser(CONTENT_TYPE)
    fed = 0
    with pytest.raises(FormDataError, match="header length exceeded"):
        for piece in [f"--{BOUNDARY}\r\nX-Big: ".encode()] + [b"a" * 256] * 100:
            fed += len(piece)
            list(parser.parse(piece))
    assert fed <= MAX_HEADER_LINE + 256 + len(BOUNDARY) + 12


def test_too_many_parts() -> None:
    with pytest.raises(FormDataError, match="segment count exceeded"):
        parse(body([file_part(f"{i}", b"x") for i in range(3)]), 10**6, max_parts=2)
    assert len(parse(body([file_part(f"{i}", b"x") for i in range(2)]), 10**6, max_parts=2)) == 2


GOOD = body([file_part("ok.csv", b"fine")])[: -len(f"--{BOUNDARY}--\r\n")]  # open for more
MALFORMED = [
    pytest.param(
        GOOD + f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\ndata".encode(),
        "end of",
        id="ends-early",
    ),
    pytest.param(
        GOOD + f"--{BOUNDARY}garbage\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
        "after boundary",
        id="garbage-after-boundary",
    ),
    pytest.param(
        f"--{BOUNDARY}garbage\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
        "after first boundary",
        id="garbage-after-first-boundary",
    ),
    pytest.param(
        GOOD + f"--{BOUNDARY}\r\n".encode() + b"X-Big: " + b"a" * 20_000,
        "length exceeded",
        id="header-too-long",
    ),
    pytest.param(
        GOOD + f"--{BOUNDARY}\r\n".encode() + b"X-A: a\r\n" * 9,
        "count exceeded",
        id="too-many-headers",
    ),
    pytest.param(
        GOOD + f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
        "Malformed",
        id="header-without-colon",
    ),
    pytest.param(b"no boundary at all", "end of", id="no-boundary"),
    # RFC 7578 wants a Content-Disposition in every part; the parser takes no transport
    # padding after a boundary (RFC 2046 allows it; no browser or HTTP client sends it).
    pytest.param(
        GOOD + f"--{BOUNDARY}\r\n\r\nno headers\r\n--{BOUNDARY}--".encode(),
        "Content-Disposition",
        id="headerless-part",
    ),
    pytest.param(
        f"--{BOUNDARY}  \t\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
        "after first boundary",
        id="transport-padding",
    ),
]


@pytest.mark.parametrize("raw, message", MALFORMED)
def test_malformed_bodies(raw: bytes, message: str) -> None:
    with pytest.raises(FormDataError, match=message):
        parse(raw, 7)


def test_content_type_and_boundary() -> None:
    assert form_parser(CONTENT_TYPE).boundary == BOUNDARY.encode()
    assert form_parser('Multipart/Form-Data; charset=utf-8; boundary="a b"').boundary == b"a b"
    assert form_parser("multipart/form-data; boundary=" + "x" * 70).boundary == b"x" * 70
    for bad in (
        None,
        "application/json",
        "multipart/mixed; boundary=abc",
        "multipart/form-data",
        'multipart/form-data; boundary=""',
        'multipart/form-data; boundary="ab "',
        "multipart/form-data; boundary=" + "x" * 71,
    ):
        with pytest.raises(FormDataError):
            form_parser(bad)


# The handler: POST .../files over real HTTP.


async def post(srv: Server, raw: bytes, chunk: int = 64 * 1024, **headers: str):
    return await srv.call(
        "POST",
        FILES,
        headers={"Content-Type": CONTENT_TYPE, **headers},
        body_producer=producer(raw, chunk),  # chunked: each piece arrives as written
    )


@pytest.mark.parametrize("chunk", [7, 64 * 1024])
async def test_upload_streams_files_and_ignores_fields(srv: Server, chunk: int) -> None:
    raw = body(
        [
            file_part("tricky.bin", TRICKY),
            ('Content-Disposition: form-data; name="note"', b"just a field"),
            file_part("empty.txt", b""),
            (
                'Content-Disposition: form-data; name="f"; filename="fallback.txt"; '
                "filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt",
                b"3",
            ),
        ]
    )
    resp = await post(srv, raw, chunk)
    assert resp.code == 201, resp.body
    files = json.loads(resp.body)["files"]
    assert [(f["name"], f["size"]) for f in files] == [
        ("tricky.bin", len(TRICKY)),
        ("empty.txt", 0),
        ("日本.txt", 1),
    ]
    assert (await srv.call("GET", files[0]["url"])).body == TRICKY
    assert leftovers(srv) == ["empty.txt", "tricky.bin", "日本.txt"]


@pytest.mark.parametrize("raw, message", MALFORMED)
async def test_malformed_body_is_a_clear_400_and_commits_nothing(
    srv: Server, raw: bytes, message: str
) -> None:
    resp = await post(srv, raw, 7)
    assert error_of(resp) == (400, "bad_multipart"), resp.body
    assert message.lower() in json.loads(resp.body)["error"]["message"].lower()
    assert leftovers(srv) == []


async def test_too_many_parts_is_a_clear_400(srv: Server) -> None:
    fields = [('Content-Disposition: form-data; name="n"', b"")] * MAX_PARTS
    resp = await post(srv, body([file_part("ok.csv", b"fine"), *fields]))
    assert error_of(resp) == (400, "bad_multipart")
    assert "segment count" in json.loads(resp.body)["error"]["message"]
    assert leftovers(srv) == []
    resp = await post(srv, body([file_part("ok.csv", b"fine"), *fields[1:]]))
    assert resp.code == 201, resp.body


async def test_duplicate_name_bad_content_type_and_no_files_are_400(srv: Server) -> None:
    resp = await post(srv, body([file_part("a.csv", b"1"), file_part("a.csv", b"2")]))
    assert error_of(resp) == (400, "bad_file_name")
    assert "twice" in json.loads(resp.body)["error"]["message"]
    for content_type in ("application/json", "multipart/form-data", "multipart/form-data; b=x"):
        resp = await post(srv, body([file_part("a.csv", b"1")]), **{"Content-Type": content_type})
        assert error_of(resp) == (400, "bad_multipart"), content_type
    resp = await post(srv, body([('Content-Disposition: form-data; name="note"', b"hi")]))
    assert error_of(resp) == (400, "no_files")
    assert leftovers(srv) == []


async def test_oversize_part_is_413_while_the_body_still_arrives(srv: Server) -> None:
    stream = IOStream(socket.create_connection(("127.0.0.1", srv.port)))
    head = (
        f"POST {FILES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    await stream.write(head.encode())
    part = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=f; filename=big.bin\r\n\r\n"
    for piece in (GOOD, part.encode()):  # a small file, then the start of a big one
        await stream.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    await refused_while_sending(stream, srv)
