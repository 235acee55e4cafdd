"""An MCP server over a running kernel session server: `python -m kss_client.mcp`."""
