"""The MCP tools, over one user's session of a running kernel session server.

Built with the official SDK's `MCPServer` (mcp 2.x). Tools: `run_python` (text plus an
image block per figure), `list_files`, `read_file`, `write_file`, `get_notebook`,
`restart_kernel`. Code that fails is a normal result marked `is_error` with its short
traceback; a call the server cannot serve (down, wrong key, busy, no such file) raises
`ToolError` with `errors.explain`'s one line, which the SDK answers as an MCP tool error
(`is_error`, the message as text) while the server keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations

from ..client import Session
from ..errors import KssError, explain
from ..model import model_view
from ..text import cut, human_size
from ..tools import run_python_description
from .config import McpSettings

MAX_IMAGE_FILE = 5_000_000  # bytes of an image file read_file returns as an image block
NOTEBOOK_IMAGE = "[{mime}: {size} in the downloaded notebook]"

INSTRUCTIONS = (
    "Python in a stateful, sandboxed Jupyter kernel of the user's own: run_python keeps "
    "variables between calls; files live in the kernel's current directory (list_files, "
    "read_file, write_file); get_notebook returns the session so far; restart_kernel "
    "starts over with no variables."
)


def _failure(exc: KssError) -> ToolError:
    return ToolError(explain(exc))


def _elide_images(notebook: dict[str, Any]) -> dict[str, Any]:
    """The notebook with each base64 image replaced by a short note, for a model to read."""
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data") or {}
            for mime in [m for m in data if m.startswith("image/") and m != "image/svg+xml"]:
                raw = data[mime]
                size = len("".join(raw) if isinstance(raw, list) else str(raw)) * 3 // 4
                data[mime] = NOTEBOOK_IMAGE.format(mime=mime, size=human_size(size))
    return notebook


class KssTools:
    """The tools' bodies; `register` puts them on an `MCPServer`."""

    def __init__(self, session: Session, settings: McpSettings) -> None:
        self.session = session
        self.settings = settings

    async def run_python(self, code: str) -> CallToolResult:
        try:
            result = await self.session.run(code, timeout=self.settings.timeout)
        except KssError as exc:
            raise _failure(exc) from exc
        view = model_view(result, max_chars=self.settings.max_chars)
        content: list[TextContent | ImageContent] = [TextContent(type="text", text=view.text)]
        content += [ImageContent(type="image", data=i.data, mime_type=i.mime) for i in view.images]
        return CallToolResult(content=content, is_error=view.is_error)

    async def list_files(self) -> str:
        try:
            files = await self.session.files()
        except KssError as exc:
            raise _failure(exc) from exc
        if not files:
            return "The work dir is empty."
        return "\n".join(
            f"{f.name}\t{human_size(f.size)}\t{f.origin or ''}\t{f.url}".rstrip() for f in files
        )

    async def read_file(self, name: str) -> CallToolResult:
        try:
            data = await self.session.download(name)
        except KssError as exc:
            raise _failure(exc) from exc
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if mime.startswith("image/") and mime != "image/svg+xml" and len(data) <= MAX_IMAGE_FILE:
            b64 = base64.b64encode(data).decode()
            return CallToolResult(content=[ImageContent(type="image", data=b64, mime_type=mime)])
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = (
                f"{name} is a binary file ({mime}, {human_size(len(data))}); read it with "
                f"run_python, or download it: {self.session.file_url(name)}"
            )
        else:
            text = cut(text, self.settings.max_chars)
        return CallToolResult(content=[TextContent(type="text", text=text)])

    async def write_file(
        self, name: str, content: str, encoding: Literal["text", "base64"] = "text"
    ) -> str:
        try:
            data = base64.b64decode(content, validate=True) if encoding == "base64" else None
        except (binascii.Error, ValueError) as exc:
            raise ToolError(f"content is not valid base64: {exc}") from exc
        try:
            info = await self.session.upload(name, data if data is not None else content.encode())
        except KssError as exc:
            raise _failure(exc) from exc
        return f"wrote {info.name} ({human_size(info.size)}): {info.url}"

    async def get_notebook(self) -> list[TextContent]:
        try:
            notebook = await self.session.notebook()
        except KssError as exc:
            raise _failure(exc) from exc
        cells = len(notebook.get("cells", []))
        url = f"{self.session.base_url}{self.session.path}/notebook"
        summary = f"The session as a Jupyter notebook ({cells} cells); the full file: {url}"
        body = json.dumps(_elide_images(notebook), indent=1, ensure_ascii=False)
        return [
            TextContent(type="text", text=summary),
            TextContent(type="text", text=cut(body, self.settings.max_chars * 4)),
        ]

    async def restart_kernel(self) -> str:
        try:
            info = await self.session.restart()
        except KssError as exc:
            raise _failure(exc) from exc
        took = f" in {info.restart_ms:.0f} ms" if info.restart_ms is not None else ""
        return f"The kernel was restarted{took}: every variable and import is gone; files stay."

    def register(self, server: MCPServer[Any]) -> None:
        run_description = run_python_description(timeout=self.settings.timeout)
        server.add_tool(self.run_python, name="run_python", description=run_description)
        read_only = ToolAnnotations(read_only_hint=True)
        server.add_tool(
            self.list_files,
            name="list_files",
            description="List the files in the user's work dir: name, size, origin, URL.",
            annotations=read_only,
        )
        server.add_tool(
            self.read_file,
            name="read_file",
            description="Read a file of the work dir: text (shortened when long) or an image.",
            annotations=read_only,
        )
        server.add_tool(
            self.write_file,
            name="write_file",
            description="Write a file into the work dir, where code reads it by name. "
            "`content` is text, or base64 with encoding='base64'.",
        )
        server.add_tool(
            self.get_notebook,
            name="get_notebook",
            description="The session so far as a Jupyter notebook (images left out).",
            annotations=read_only,
        )
        server.add_tool(
            self.restart_kernel,
            name="restart_kernel",
            description="Restart the Python kernel: all variables are lost, files stay.",
            annotations=ToolAnnotations(destructive_hint=True),
        )


def build_server(session: Session, settings: McpSettings) -> MCPServer[Any]:
    """An `MCPServer` whose tools act on `session`."""
    server: MCPServer[Any] = MCPServer(
        name="kss-code-interpreter", instructions=INSTRUCTIONS, log_level="WARNING"
    )
    KssTools(session, settings).register(server)
    return server
