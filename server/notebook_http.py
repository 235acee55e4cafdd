"""Notebook download and markdown notes: the transcript as a Jupyter notebook."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import quote

from kernels.errors import SessionNotFound
from transcript.notebook import dumps, notebook_dict

from .api import ApiHandler, iso_time
from .auth import Access
from .protocol import ProtocolError


def notebook_url(user: str) -> str:
    return f"/api/sessions/{quote(user, safe='')}/notebook"


class NotebookHandler(ApiHandler):
    """`GET .../notebook[?since_restart=true]`: the session as an .ipynb download; a signed
    link opens it without a key."""

    access = Access.LINK

    async def get(self, user: str) -> None:
        user = self.user_arg(user)
        since_restart = self.get_query_argument("since_restart", "false").lower()
        if since_restart not in ("true", "false", "1", "0"):
            raise ProtocolError(400, "invalid_field", "'since_restart' must be true or false")
        cells = await self.state.transcript.cells(self.tenant, user)
        live = self.state.registry.find(self.tenant, user)
        if (
            not cells
            and live is None
            and not await self.state.transcript.session(self.tenant, user)
        ):
            raise SessionNotFound(f"no session for user {user!r}")
        # Building and encoding a large session takes a while: keep it off the event loop.
        body = await asyncio.to_thread(
            lambda: dumps(notebook_dict(cells, user, since_restart in ("true", "1")))
        )
        filename = f"{user}-{time.strftime('%Y-%m-%d', time.gmtime())}.ipynb"
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.set_header(
            "Content-Disposition",
            f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}",
        )
        self.finish(body)


class NotebookLinkHandler(ApiHandler):
    """`GET .../notebook/link[?ttl=]`: a signed link to the notebook, for a browser's
    `<a download>` or a model's host, which cannot send a key."""

    access = Access.USER

    async def get(self, user: str) -> None:
        user = self.user_arg(user)
        ttl = self.ttl_arg(self.query_ttl())
        assert self.principal is not None
        url, expires = self.state.auth.signed_url(self.principal, notebook_url(user), ttl)
        self.write_json({"url": url, "expires_at": iso_time(expires)})


class NotesHandler(ApiHandler):
    """`POST .../notes {"markdown"}`: a markdown cell at the current end of the transcript."""

    access = Access.USER

    async def post(self, user: str) -> None:
        user = self.user_arg(user)
        body = self.json_body()
        markdown = body.get("markdown")
        if markdown is None:
            raise ProtocolError(400, "missing_field", "'markdown' is required")
        if not isinstance(markdown, str):
            raise ProtocolError(400, "invalid_field", "'markdown' must be a string")
        if len(markdown.encode("utf-8", "surrogatepass")) > self.state.settings.max_code_bytes:
            raise ProtocolError(413, "payload_too_large", "the note is too large")
        live = self.state.registry.find(self.tenant, user)
        if live is None and not await self.state.transcript.session(self.tenant, user):
            raise SessionNotFound(f"no session for user {user!r}")
        note_id = uuid.uuid4().hex
        seq = live.publish_note(markdown) if live is not None else 0
        self.state.transcript.add_note(self.tenant, user, markdown, note_id, seq)
        self.write_json({"id": note_id, "seq": seq or None}, 201)
