"""The OpenAPI document (`server/openapi.py`) stays true: a valid OpenAPI 3.1 document,
every route and method of the server described and nothing else, every error code the
server can produce listed under its status (and no code it cannot produce), and the route
that serves it. The answers of the REST tests are checked against it by
`tests/openapi_check.py`; here, that the check refuses what the document does not say."""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import tornado.web
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from tornado.httputil import HTTPHeaders

from files.errors import FileAreaError
from kernels.errors import KernelError
from packages.errors import PackageError
from server.app import route_table
from server.errors import error_status
from server.openapi import ERRORS, FRAME_ERRORS, openapi_document
from tests.client import Api
from tests.conftest import RunningServer, make_settings, running_server
from tests.openapi_check import check_answer, check_message
from transcript.store.base import StoreUnavailable

ROOT = Path(__file__).resolve().parents[2]
DOC = openapi_document()
METHODS = [m.lower() for m in tornado.web.RequestHandler.SUPPORTED_METHODS]
METRICS_TOKEN = "metrics-token-for-tests"


def handler_methods(handler: type[tornado.web.RequestHandler]) -> set[str]:
    """The HTTP methods a handler implements (overrides from tornado's RequestHandler)."""
    base = tornado.web.RequestHandler
    return {m for m in METHODS if getattr(handler, m) is not getattr(base, m)}


def test_the_document_is_valid_openapi_3_1():
    assert DOC["openapi"].startswith("3.1.")
    validate(DOC)
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert json.loads(json.dumps(DOC)) == DOC  # plain JSON, nothing Python-only


def test_every_route_and_method_is_described_and_nothing_else():
    routes = {(t, m) for t, handler in route_table() for m in handler_methods(handler)}
    described = {(p, m) for p, item in DOC["paths"].items() for m in METHODS if m in item}
    assert routes - described == set(), "routes the document does not describe"
    assert described - routes == set(), "operations the server does not have"
    ids = [op["operationId"] for _, item in DOC["paths"].items() for m, op in item.items()
           if m in METHODS]  # fmt: skip
    assert len(ids) == len(set(ids))


def test_routes_without_a_credential_say_so():
    anonymous = {"/api/health", "/api/openapi.json", "/", "/console/{name}"}
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            open_to_all = path in anonymous or method == "options"
            assert (op["security"] == []) == open_to_all, (path, method)


def literal_errors(path: Path) -> Iterator[tuple[int, str]]:
    """(status, code) of every error a module writes by hand: `ProtocolError(status,
    code, ...)`, the edge's `error_response(status, code, ...)`, `unauthorized(message[,
    code])`, and `return status, code, message` (errors.error_status)."""
    tree = ast.parse(path.read_text(), str(path))
    helpers = [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "unauthorized"
    ]
    inside_helper = {id(n) for helper in helpers for n in ast.walk(helper)}  # its calls count
    for node in ast.walk(tree):
        if id(node) in inside_helper:
            continue
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name in ("ProtocolError", "error_response"):
                status, code = node.args[:2]
                where = f"{path.name}:{node.lineno}"
                assert isinstance(status, ast.Constant), f"{where}: a status the test can't read"
                assert isinstance(code, ast.Constant), f"{where}: a code the test can't read"
                yield status.value, code.value
            elif name == "unauthorized" and isinstance(node.func, ast.Name):
                code = node.args[1].value if len(node.args) > 1 else "unauthorized"  # type: ignore[attr-defined]
                yield 401, code
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            parts = node.value.elts
            if len(parts) == 3 and all(isinstance(p, ast.Constant) for p in parts[:2]):
                status, code = parts[0].value, parts[1].value  # type: ignore[attr-defined]
                if isinstance(status, int) and isinstance(code, str):
                    yield status, code


def domain_errors() -> Iterator[tuple[int, str]]:
    """Every domain error class below the three bases, with the status it is answered."""
    yield error_status(StoreUnavailable("x"))[:2]
    stack: list[type[Exception]] = [KernelError, FileAreaError, PackageError]
    while stack:
        for cls in stack.pop().__subclasses__():
            stack.append(cls)
            exc = cls.__new__(cls)  # some take more than a message (`SessionElsewhere`)
            Exception.__init__(exc, "x")
            yield error_status(exc)[:2]


def producible() -> set[tuple[int, str]]:
    found = set(domain_errors())
    for path in sorted((ROOT / "server").glob("*.py")):
        found |= set(literal_errors(path))
    # tornado's own HTTPErrors, as `error_status` writes them: a method a route has not
    # (405), the console's static files (404 missing, 403 a directory), an undecodable
    # path or query argument (400).
    for status in (400, 403, 404, 405):
        found.add(error_status(tornado.web.HTTPError(status))[:2])
    return found


def documented() -> set[tuple[int, str]]:
    """(status, code) of every error response of every operation, and `x-unrouted`'s."""
    found = set()
    groups = [op["responses"] for item in DOC["paths"].values() for op in item.values()
              if isinstance(op, dict) and "responses" in op]  # fmt: skip
    unrouted = DOC["x-unrouted"]
    for responses in [
        *groups,
        *(unrouted[k]["responses"] for k in ("unknownPath", "unknownMethod")),
    ]:
        for status, response in responses.items():
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            for option in schema.get("oneOf", [schema]):
                codes = option.get("properties", {}).get("error", {}).get("properties", {})
                for code in codes.get("code", {}).get("enum", []):
                    found.add((int(status), code))
    return found


def test_every_error_code_the_server_can_produce_is_documented_under_its_status():
    can = producible()
    assert len(can) > 30  # the collection works
    table = {(status, code) for code, (status, _) in ERRORS.items()}
    # Codes only a WebSocket frame gets (in a `rejected` event, not an HTTP answer).
    frames_only = {(s, c) for s, c in can if c in FRAME_ERRORS and c not in ERRORS}
    assert can - table - frames_only == set(), "codes server/openapi.py lacks"
    assert table - can == set(), "codes in server/openapi.py that nothing answers"
    assert {c for _, c in can} >= set(FRAME_ERRORS), "frame codes that nothing answers"
    assert can - frames_only - documented() == set(), "codes no operation lists"
    rejected = DOC["components"]["schemas"]["WsRejected"]["properties"]["error"]
    assert set(rejected["properties"]["code"]["enum"]) == set(FRAME_ERRORS)
    codes = DOC["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert set(codes["enum"]) == {c for _, c in can} - {c for _, c in frames_only}


def test_each_error_code_is_in_the_api_reference():
    api = (ROOT / "docs" / "api.md").read_text()
    missing = [code for code in {**ERRORS, **FRAME_ERRORS} if f"`{code}`" not in api]
    assert missing == [], f"error codes docs/api.md does not name: {missing}"


def headers(**values: str) -> HTTPHeaders:
    return HTTPHeaders({k.replace("_", "-"): v for k, v in values.items()})


JSON = "application/json; charset=utf-8"


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def error(code: str) -> bytes:
    return body({"error": {"code": code, "message": "m"}})


@pytest.mark.parametrize(
    "method, path, status, hdrs, content, why",
    [
        ("GET", "/api/health", 200, headers(Content_Type=JSON), body({"status": "fine"}), "enum"),
        ("GET", "/api/health", 201, headers(Content_Type=JSON), body({"status": "ok"}), "status"),
        ("GET", "/api/health", 200, headers(Content_Type="text/html"), b"ok", "content type"),
        ("GET", "/api/health", 503, headers(Content_Type=JSON), body({"status": "draining"}),
         "Retry-After"),
        ("GET", "/api/status", 401, headers(Content_Type=JSON), error("unauthorized"),
         "WWW-Authenticate"),
        ("GET", "/api/sessions/alice", 404, headers(Content_Type=JSON), error("file_not_found"),
         "a code the operation does not answer"),
        ("GET", "/api/sessions/alice", 404, headers(Content_Type=JSON),
         body({"error": {"code": "session_not_found"}}), "no message"),
        ("GET", "/api/sessions/alice", 200, headers(Content_Type=JSON),
         body({"user": "alice", "state": "idle", "created": 1, "last_activity": 1,
               "execution_count": 0, "extra": 1}), "a field the document lacks"),
        ("POST", "/api/sessions/alice/interrupt", 200, headers(Content_Type=JSON), b"{", "JSON"),
        ("OPTIONS", "/api/status", 204, headers(Allow="GET"), b"x", "a body"),
        ("GET", "/api/nowhere", 200, headers(Content_Type=JSON), body({}), "unrouted"),
        ("DELETE", "/api/status", 404, headers(Content_Type=JSON), error("not_found"),
         "a path the document has answers 405 to a method it lacks, not 404"),
    ],
)  # fmt: skip
def test_the_check_refuses_what_the_document_does_not_describe(
    method, path, status, hdrs, content, why
):
    with pytest.raises(AssertionError):
        check_answer(method, path, status, hdrs, content)


def test_the_check_takes_what_the_document_describes():
    ok = headers(Content_Type=JSON)
    check_answer("GET", "/api/health", 200, ok, body({"status": "ok"}))
    check_answer("GET", "/api/nowhere?x=1", 404, ok, error("not_found"))
    check_answer("DELETE", "/api/status", 405, ok, error("method_not_allowed"))
    download = headers(Content_Type="text/csv", Content_Disposition="attachment", Etag='"e"',
                       Last_Modified="x", X_Content_Type_Options="nosniff")  # fmt: skip
    check_answer("GET", "/api/sessions/a/files/d/x.csv", 200, download, b"a,b\n")
    check_answer("HEAD", "/", 200, headers(Content_Type="text/html", Content_Security_Policy="x",
                 X_Content_Type_Options="nosniff", X_Frame_Options="DENY",
                 Referrer_Policy="no-referrer", Etag='"e"'), b"")  # fmt: skip
    check_message({"type": "stream", "name": "stdout", "text": "hi\n", "id": "c1", "seq": 3})
    check_message({"type": "gap", "from_seq": 1, "to_seq": 2})
    with pytest.raises(AssertionError):
        check_message({"type": "stream", "name": "stdout", "seq": 3})  # no text
    with pytest.raises(AssertionError):
        check_message({"type": "telepathy", "seq": 3})


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("openapi"), pool_size=0, metrics_token=METRICS_TOKEN
    )
    async with running_server(settings) as server:
        yield server


async def test_the_route_serves_the_document_to_anyone(srv: RunningServer):
    anon = Api(srv.base, None)
    resp = await anon.call("GET", "/api/openapi.json")
    assert resp.status == 200 and resp.json == DOC
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    again = await anon.call(
        "GET", "/api/openapi.json", headers={"If-None-Match": resp.headers["ETag"]}
    )
    assert again.status == 304 and again.body == b""


async def test_answers_no_rest_suite_gets_follow_the_document(srv: RunningServer):
    """Each call is checked by `Api.call`; these are the answers no other suite asks for."""
    anon, metrics = Api(srv.base, None), Api(srv.base, METRICS_TOKEN)
    resp = await metrics.call("GET", "/metrics")
    assert resp.status == 200 and b"kss_sessions" in resp.body
    assert (await srv.api.call("GET", "/metrics")).status == 401  # an API key does not open it
    assert (await anon.call("HEAD", "/")).status == 200
    assert (await anon.call("GET", "/", headers={"Range": "bytes=0-9"})).status == 206
    assert (await anon.call("GET", "/", headers={"Range": "bytes=999999-"})).status == 416
    resp = await srv.api.call("DELETE", "/api/status")
    assert resp.status == 405 and resp.json["error"]["code"] == "method_not_allowed"
    assert (await anon.call("DELETE", "/api/status")).status == 401  # the credential first
    resp = await srv.api.call("PATCH", "/api/nowhere")
    assert resp.status == 404 and resp.json["error"]["code"] == "not_found"
    resp = await srv.api.call("OPTIONS", "/api/sessions/alice/files/a/b.txt")
    assert resp.status == 204 and "PUT" in resp.headers["Allow"]
    assert (await srv.api.call("POST", "/api/sessions/alice/token", {"ttl": 60})).status == 201
