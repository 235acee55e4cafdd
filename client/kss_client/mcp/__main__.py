"""`python -m kss_client.mcp [--http]`: serve the tools over stdio, or streamable HTTP."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from ..client import Client
from .config import McpSettings, parse
from .server import build_server


async def serve(settings: McpSettings) -> None:
    """Run until the MCP client goes away (stdio) or the process is stopped (HTTP)."""
    async with Client(settings.url, settings.api_key) as client:
        server = build_server(client.session(settings.user), settings)
        if settings.http:
            await server.run_streamable_http_async(host=settings.mcp_host, port=settings.mcp_port)
        else:
            await server.run_stdio_async()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
