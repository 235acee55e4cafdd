"""The console's files over HTTP: the CSP and other headers, content types, JSON errors, and
static checks that the page carries no inline script or style and its scripts build the DOM
without parsing strings as HTML. The console in a browser: test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
import pytest_asyncio

from server.console_http import CONSOLE_DIR
from tests.client import Api
from tests.conftest import RunningServer, make_settings, running_server


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    settings = make_settings(tmp_path_factory.mktemp("console"), pool_size=0)
    async with running_server(settings) as server:
        yield server


def csp_of(headers) -> dict[str, str]:
    directives = (d.strip() for d in headers["Content-Security-Policy"].split(";"))
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in directives if d}


async def test_the_page_and_its_files_come_with_a_strict_csp(srv: RunningServer):
    anon = Api(srv.base, None)
    host = f"127.0.0.1:{srv.settings.port}"
    for path, content_type in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/vendor/purify.es.mjs", "text/javascript"),
        ("/console/console.css", "text/css"),
    ]:
        resp = await anon.call("GET", path)
        assert resp.status == 200, path
        assert resp.headers["Content-Type"].startswith(content_type), path
        csp = csp_of(resp.headers)
        assert csp["default-src"] == "'none'"
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
        assert csp["img-src"] == "'self' data: blob:"
        assert csp["connect-src"] == f"'self' ws://{host} wss://{host}"
        assert csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
        assert csp["base-uri"] == "'none'"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
    resp = await anon.call("HEAD", "/")  # the page's route has no path argument to pass on
    assert resp.status == 200 and resp.body == b"" and "Content-Security-Policy" in resp.headers
    # A Host that is not a plain host[:port] is left out of the policy, never pasted in.
    resp = await anon.call("GET", "/", headers={"Host": "evil_host*"})
    assert resp.status == 200 and csp_of(resp.headers)["connect-src"] == "'self'"


async def test_missing_console_files_are_json_404s(srv: RunningServer):
    anon = Api(srv.base, None)
    for path in ["/console/nope.js", "/console/../app.py", "/console/%2e%2e/app.py"]:
        resp = await anon.call("GET", path)
        assert resp.status in (403, 404), path
        assert resp.json["error"]["code"] in ("not_found", "forbidden"), path
    assert (await anon.call("GET", "/nowhere")).json["error"]["code"] == "not_found"
    resp = await anon.call("GET", "/console/vendor")  # a directory: tornado's own 403
    assert resp.status == 403 and resp.json["error"] == {
        "code": "forbidden",
        "message": "vendor is not a file",
    }


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.styled: list[str] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            self.scripts.append(named)
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")
        if "style" in named:
            self.styled.append(tag)
        self.handlers += [f"{tag} {a}" for a in named if a.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def test_the_page_has_no_inline_script_style_or_handler():
    page = _Page()
    page.feed((CONSOLE_DIR / "index.html").read_text())
    assert page.scripts == [{"type": "module", "src": "/console/app.js"}]
    assert page.inline == [] and page.styled == [] and page.handlers == []


def test_the_scripts_never_parse_strings_as_html_or_code():
    # Kernel output reaches the DOM as text, or through DOMPurify (vendored, not ours).
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"setAttribute\(\s*[\"']style|\.style\.|javascript:"
    )
    ours = sorted(CONSOLE_DIR.glob("*.js"))
    assert {p.name for p in ours} == {"app.js", "api.js", "render.js"}
    for path in ours:
        hits = [line for line in path.read_text().splitlines() if forbidden.search(line)]
        assert hits == [], f"{path.name}: {hits}"


def test_dompurify_is_vendored_with_its_licence():
    vendor = CONSOLE_DIR / "vendor"
    assert (vendor / "purify.es.mjs").read_text().startswith("/*! @license DOMPurify 3.")
    assert "Apache License" in (vendor / "DOMPurify-LICENSE").read_text()
    assert "Mozilla Public License" in (vendor / "DOMPurify-LICENSE-MPL").read_text()
    assert "purify.es.mjs" in (vendor / "README.md").read_text()
