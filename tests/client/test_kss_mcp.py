"""The MCP server, driven by the official SDK's own client over stdio and streamable HTTP,
against a real kernel session server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from client_faults import dead_url
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ImageContent, TextContent

from tests.conftest import KEY, RunningServer, free_port

FIGURE = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()\ntotal = 6\ntotal * 7"
TOOLS = {"run_python", "list_files", "read_file", "write_file", "get_notebook", "restart_kernel"}


def argv(url: str, user: str) -> list[str]:
    return ["-m", "kss_client.mcp", "--url", url, "--api-key", KEY, "--user", user]


@contextlib.asynccontextmanager
async def over_stdio(url: str, user: str, log: Path) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=argv(url, user))
    with log.open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@contextlib.asynccontextmanager
async def over_http(url: str, user: str, log: Path) -> AsyncIterator[ClientSession]:
    port = free_port()
    with log.open("w") as errlog:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv(url, user),
            "--http",
            "--mcp-port",
            str(port),
            stdout=errlog,
            stderr=errlog,
        )
        try:
            async with asyncio.timeout(30):
                while True:  # until the MCP server listens
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", port)
                    except OSError:
                        assert proc.returncode is None, "the MCP server exited; see its log"
                        await asyncio.sleep(0.05)
                        continue
                    writer.close()
                    await writer.wait_closed()
                    break
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    yield session
        finally:
            proc.terminate()
            await proc.wait()


def texts(result: object) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))  # type: ignore[attr-defined]


async def exercise(session: ClientSession) -> None:
    """What both transports must do: tools, a figure, errors that keep the server serving."""
    listed = await session.list_tools()
    assert {t.name for t in listed.tools} == TOOLS
    run = next(t for t in listed.tools if t.name == "run_python")
    assert "State persists" in (run.description or "")

    result = await session.call_tool("run_python", {"code": FIGURE})
    assert not result.is_error
    kinds = [type(c) for c in result.content]
    assert kinds == [TextContent, ImageContent]
    image = result.content[1]
    assert isinstance(image, ImageContent) and image.mime_type == "image/png"
    assert "result:\n42\nimages: 1 attached" in texts(result)

    failed = await session.call_tool("run_python", {"code": "total / 0"})
    assert failed.is_error and "ZeroDivisionError: division by zero" in texts(failed)

    missing = await session.call_tool("read_file", {"name": "missing.csv"})
    assert missing.is_error and "no such file" in texts(missing)
    still = await session.call_tool("run_python", {"code": "total"})
    assert not still.is_error and texts(still).endswith("result:\n6")

    wrote = await session.call_tool("write_file", {"name": "notes.txt", "content": "a,b\n1,2\n"})
    assert "wrote notes.txt (8 B)" in texts(wrote)
    read = await session.call_tool("read_file", {"name": "notes.txt"})
    assert texts(read) == "a,b\n1,2\n"
    assert "notes.txt" in texts(await session.call_tool("list_files", {}))
    nb = await session.call_tool("get_notebook", {})
    summary, body = [c.text for c in nb.content if isinstance(c, TextContent)]
    assert "Jupyter notebook (3 cells)" in summary
    assert json.loads(body)["nbformat"] == 4 and "[image/png:" in body
    restarted = await session.call_tool("restart_kernel", {})
    assert "restarted" in texts(restarted)
    after = await session.call_tool("run_python", {"code": "'total' in dir()"})
    assert "kernel was restarted" in texts(after) and texts(after).endswith("False")


async def test_mcp_over_stdio(kss: RunningServer, tmp_path: Path) -> None:
    async with over_stdio(kss.base, "mcp-stdio", tmp_path / "mcp.log") as session:
        await exercise(session)


async def test_mcp_over_streamable_http(kss: RunningServer, tmp_path: Path) -> None:
    async with over_http(kss.base, "mcp-http", tmp_path / "mcp.log") as session:
        await exercise(session)


async def test_a_server_that_is_down_is_a_tool_error_and_mcp_keeps_serving(
    tmp_path: Path,
) -> None:
    async with over_stdio(dead_url(), "down", tmp_path / "mcp.log") as session:
        for _ in range(2):
            result = await session.call_tool("run_python", {"code": "1"})
            assert result.is_error and "cannot be reached" in texts(result)
        assert len((await session.list_tools()).tools) == len(TOOLS)


def test_the_mcp_server_needs_an_api_key() -> None:
    from kss_client.mcp.config import parse

    with pytest.raises(SystemExit):
        parse(["--url", "http://x"], environ={})
    settings = parse(["--http"], environ={"KSS_API_KEY": "k" * 10, "KSS_USER": "bob"})
    assert settings.http and settings.user == "bob" and settings.api_key == "k" * 10
