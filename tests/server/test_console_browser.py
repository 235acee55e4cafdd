"""The web console in a real browser: Playwright driving Debian's Chromium (`make test`
installs it; Playwright's own browser download is never used) against one real server.

One server and one browser for the module; the tests run in order on one page, each waiting
for what it expects to see (Playwright's auto-waiting `expect`), never for a fixed time.
Screenshots are kept under the tests' tmp dirs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import pytest_asyncio
from playwright.async_api import async_playwright, expect

from tests.conftest import KEY, RunningServer, make_settings, running_server, sandbox_modes

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UIDS = {"kernel_uid_first": 2_700_000, "kernel_uid_last": 2_700_099}

if not os.access(CHROMIUM, os.X_OK) and os.environ.get("KSS_TEST_ALLOW_NO_BROWSER") != "1":
    raise RuntimeError(
        f"{CHROMIUM} is missing; `make test` installs Debian's chromium. "
        "Set KSS_TEST_ALLOW_NO_BROWSER=1 to run the other suites without it."
    )
pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason="no chromium, and KSS_TEST_ALLOW_NO_BROWSER=1 allows that",
)


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("console-data"), sandbox=sandbox_modes()[-1], **UIDS
    )
    async with running_server(settings) as server:
        yield server


class Browser:
    """The page, and the WebSocket connections Playwright passes through, as (page side,
    server side) pairs, so a test can cut one as a network drop would."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.sockets: list[Any] = []
        self.errors: list[str] = []


@pytest_asyncio.fixture(scope="module")
async def browser(
    srv: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),  # a fresh user data dir
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            accept_downloads=True,
            viewport={"width": 1280, "height": 900},
            base_url=srv.base,
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            state = Browser(page)
            page.on("pageerror", lambda exc: state.errors.append(str(exc)))

            def pass_through(route: Any) -> None:
                state.sockets.append((route, route.connect_to_server()))

            await page.route_web_socket(re.compile(r"/api/sessions/[^/]+/ws"), pass_through)
            yield state
        finally:
            await context.close()


async def run(page: Any, code: str) -> Any:
    """Type `code` into the input cell and Shift+Enter it; the locator of its cell."""
    cells = page.locator("#cells .cell")
    index = await cells.count()
    await page.fill("#code", code)
    await page.press("#code", "Shift+Enter")
    return cells.nth(index)  # not `.last`: a later cell would become that


async def test_sign_in_run_print_and_see_a_figure(
    browser: Browser, srv: RunningServer, tmp_path: Path
):
    page = browser.page
    await srv.api.execute("zed", "print('from a script')")  # a session from elsewhere
    await page.goto("/")
    await page.fill("#credential", KEY)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#user-list button")).to_have_text(["zed (idle)"])
    await page.fill("#user-name", "alice")
    await page.click("#user-form button[type=submit]")
    await expect(page.locator("#conn")).to_have_text("connected")
    assert page.url.endswith("/#alice")
    first = await run(page, "print(1)")
    await expect(first.locator("pre.stdout")).to_have_text("1\n")
    await expect(first.locator(".cell-status")).to_contain_text("ok")
    figure = await run(
        page,
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('rising')\nplt.show()",
    )
    image = figure.locator("img.image-output")
    await expect(image).to_have_count(1, timeout=30_000)
    assert (await image.get_attribute("src")).startswith("data:image/png;base64,iVBOR")
    assert await image.evaluate("img => img.complete && img.naturalWidth > 100")
    await expect(page.locator("#state")).to_have_text("idle")
    await page.screenshot(path=tmp_path / "console-figure.png", full_page=True)
    assert (tmp_path / "console-figure.png").stat().st_size > 10_000


async def test_html_and_ansi_outputs_are_shown_safely(browser: Browser):
    page = browser.page
    code = (
        "from IPython.display import HTML, display\n"
        "display(HTML('<table><tr><td>cell</td></tr></table>"
        '<img src=x onerror="document.title=1"><script>document.title=2</script>\'))\n'
        "print('\\x1b[31mred\\x1b[0m plain')"
    )
    out = await run(page, code)
    await expect(out.locator(".html-output td")).to_have_text("cell")
    await expect(out.locator(".ansi-fg-1")).to_have_text("red")
    await expect(out.locator(".cell-status")).to_contain_text("ok")
    assert await out.locator(".html-output script, .html-output [onerror]").count() == 0
    assert await page.title() == "Kernel session console"
    error = await run(page, "1/0")
    await expect(error.locator(".error-output")).to_contain_text("ZeroDivisionError")
    assert await error.locator(".error-output [class^=ansi-fg]").count() > 0


async def test_drop_a_file_read_it_from_code_and_see_generated_files(
    browser: Browser, srv: RunningServer
):
    page = browser.page
    data = await page.evaluate_handle(
        """() => {
            const dt = new DataTransfer();
            dt.items.add(new File(['x,y\\n1,2\\n3,4\\n'], 'points.csv', {type: 'text/csv'}));
            return dt;
        }"""
    )
    await page.dispatch_event("#drop-zone", "drop", {"dataTransfer": data})
    listed = page.locator("#file-list .file-name", has_text="points.csv")
    await expect(listed).to_have_count(1)
    read = await run(page, "import pandas as pd\nprint(pd.read_csv('points.csv')['y'].sum())")
    await expect(read.locator("pre.stdout")).to_have_text("6\n")
    await run(page, "open('made.txt', 'w').write('by the kernel')")
    made = page.locator("#file-list .file-name", has_text="made.txt")
    await expect(made).to_have_count(1)  # from the `file` event, no reload
    href = await made.get_attribute("href")
    assert "&sig=" in href  # a signed link: opens without a header
    response = await page.request.get(href)
    assert response.status == 200 and await response.text() == "by the kernel"
    await page.locator("#file-list .file", has_text="made.txt").locator("button").click()
    await expect(made).to_have_count(0)


async def test_interrupt_a_sleep_and_see_the_queue(browser: Browser):
    page = browser.page
    sleeper = await run(page, "import time\ntime.sleep(60)")
    await expect(sleeper.locator(".cell-status")).to_have_text("running")
    await expect(page.locator("#state")).to_have_text("busy")
    queued = await run(page, "'after the sleep'")
    await expect(queued.locator(".cell-status")).to_contain_text("queued")
    await page.click("#interrupt")
    await expect(sleeper.locator(".error-output")).to_contain_text("KeyboardInterrupt")
    await expect(sleeper.locator(".cell-status")).to_contain_text("error")
    await expect(queued.locator(".result")).to_contain_text("'after the sleep'")


async def test_reconnect_after_a_drop_loses_and_repeats_nothing(browser: Browser):
    page = browser.page
    code = "import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(0.3)"
    counting = await run(page, code)
    await expect(counting.locator("pre.stdout")).to_contain_text("1")
    page_side, server_side = browser.sockets[-1]
    await server_side.close()
    await page_side.close(code=4001, reason="network drop")
    await expect(page.locator("#conn")).to_have_text("connected")
    await expect(counting.locator(".cell-status")).to_contain_text("ok", timeout=15_000)
    await expect(counting.locator("pre.stdout")).to_have_text("0\n1\n2\n3\n4\n5\n")
    assert len(browser.sockets) >= 2  # it did reconnect


async def test_notes_and_the_notebook_download(browser: Browser, tmp_path: Path):
    page = browser.page
    await page.fill("#note", "A *note* from the console")
    await page.click("#note-form button")
    await expect(page.locator("#cells .note")).to_contain_text("A *note* from the console")
    async with page.expect_download() as caught:
        await page.click("#download-notebook")
    download = await caught.value
    assert re.fullmatch(r"alice-\d{4}-\d{2}-\d{2}\.ipynb", download.suggested_filename)
    path = tmp_path / download.suggested_filename
    await download.save_as(path)
    notebook = nbformat.reads(path.read_text(), as_version=4)
    nbformat.validate(notebook)
    sources = [c.source for c in notebook.cells]
    assert "print(1)" in sources and "A *note* from the console" in sources
    assert browser.errors == []


async def test_another_users_token_is_refused(browser: Browser, srv: RunningServer, tmp_path: Path):
    page = browser.page
    minted = await srv.api.call("POST", "/api/sessions/bob/token", {"ttl": 300})
    bob = minted.json["token"]
    await page.click("#sign-out")
    await expect(page.locator("#sign-in")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    await page.goto("/#alice")
    await page.fill("#credential", bob)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#notice")).to_contain_text("Refused for user alice")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator("#session")).to_be_hidden()
    await page.screenshot(path=tmp_path / "console-refused.png")
    # The same token opens bob's own session.
    await page.goto("/#")
    await page.fill("#credential", bob)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#session-user")).to_have_text("bob")
    await expect(page.locator("#conn")).to_have_text("connected")
    bobs = await run(page, "print('bob here')")
    await expect(bobs.locator("pre.stdout")).to_have_text("bob here\n")
    assert json.loads(await page.evaluate("JSON.stringify(Object.keys(sessionStorage))")) == [
        "kss.credential"
    ]


async def test_a_session_from_elsewhere_replays_with_its_code(browser: Browser):
    page = browser.page
    await page.click("#sign-out")
    await page.goto("/#")
    await page.fill("#credential", KEY)
    await page.click("#sign-in-form button[type=submit]")
    await page.locator("#user-list button", has_text="zed").click()
    await expect(page.locator("#session-user")).to_have_text("zed")
    earlier = page.locator("#cells .cell").first
    await expect(earlier.locator(".cell-code")).to_have_text("print('from a script')")
    await expect(earlier.locator("pre.stdout")).to_have_text("from a script\n")
    await expect(earlier.locator(".cell-status")).to_contain_text("ok")
