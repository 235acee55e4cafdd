"""The transcript as a Jupyter notebook: download it (`GET .../notebook`), with the user's files
as a runnable bundle (`GET .../bundle`), run one again in the session (`POST .../notebook`),
and markdown notes."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any
from urllib.parse import quote

from tornado.iostream import StreamClosedError

from files.area import FileArea
from files.bundle import write_bundle
from files.errors import BadBundle
from files.transfer import private_file
from kernels.errors import SessionNotFound
from transcript.notebook import BadNotebook, dumps, notebook_dict, read_code_cells
from transcript.store.base import CellRecord

from . import resume
from .api import ApiHandler, iso_time
from .auth import Access
from .protocol import EXEC_ID_RE, ProtocolError

BUNDLE_OVERHEAD = 1024 * 1024  # a bundle's body: the quota of files, plus the zip's own bytes
ZIP_MAGIC = b"PK\x03\x04"


def notebook_url(user: str) -> str:
    return f"/api/sessions/{quote(user, safe='')}/notebook"


def _flag(handler: ApiHandler, name: str, default: str) -> bool:
    raw = handler.get_query_argument(name, default).lower()
    if raw not in ("true", "false", "1", "0"):
        raise ProtocolError(400, "invalid_field", f"{name!r} must be true or false")
    return raw in ("true", "1")


def _attachment(filename: str) -> str:
    return f"attachment; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"


class NotebookBase(ApiHandler):
    async def cells(self, user: str) -> list[CellRecord]:
        """The session's cells; 404 when there is no such session."""
        cells = await self.state.transcript.cells(self.tenant, user)
        live = self.state.registry.find(self.tenant, user)
        if (
            not cells
            and live is None
            and not await self.state.transcript.session(self.tenant, user)
        ):
            raise SessionNotFound(f"no session for user {user!r}")
        return cells

    def area(self, user: str) -> FileArea:
        return self.state.files.area(self.tenant, user)

    async def uploads(self, user: str) -> list[dict[str, Any]]:
        """The notebook's `kss.files`: uploads still as uploaded, with their sha256."""
        infos = await self.area(user).auploads()
        return [{"name": i.name, "size": i.size, "sha256": i.sha256} for i in infos]

    def filename(self, user: str, suffix: str) -> str:
        return f"{user}-{time.strftime('%Y-%m-%d', time.gmtime())}{suffix}"


class NotebookHandler(NotebookBase):
    """`GET .../notebook[?since_restart=true][&setup=false]`: the session as an .ipynb; a
    signed link opens it without a key. `POST .../notebook` (an .ipynb, or a bundle zip):
    run its code cells in the session (a link never opens a POST)."""

    access = Access.LINK

    def initialize(self, state: Any) -> None:  # type: ignore[override]
        super().initialize(state)
        self._body_fd = -1
        self._gone = False

    def body_limit(self) -> int:
        if self.request.method == "POST":
            return self.state.settings.files.quota + BUNDLE_OVERHEAD
        return super().body_limit()

    async def get(self, user: str) -> None:
        user = self.user_arg(user)
        since_restart = _flag(self, "since_restart", "false")
        setup = _flag(self, "setup", "true")
        cells = await self.cells(user)
        files = await self.uploads(user)
        # Building and encoding a large session takes a while: keep it off the event loop.
        body = await asyncio.to_thread(
            lambda: dumps(notebook_dict(cells, user, since_restart, setup, files))
        )
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.set_header("Content-Disposition", _attachment(self.filename(user, ".ipynb")))
        self.finish(body)

    # -- resume from a notebook ------------------------------------------------------------

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "POST":
            return
        self._area = self.area(self.user_arg(self.path_args[0]))
        # The body goes to a private file in the staging dir, never whole into memory.
        self._body_fd = await self._area.lane.run(private_file, self.state.files.staging)
        self.request.connection.set_max_body_size(self.body_limit())

    async def body_received(self, chunk: bytes) -> None:  # type: ignore[override]
        if self.request.method != "POST":
            return super().body_received(chunk)
        self._size += len(chunk)
        if self._size > self.body_limit():
            self._too_large = True
        if not self._too_large and chunk and self._body_fd >= 0:
            await self._area.lane.run(resume.write_chunk, self._body_fd, chunk)
        return None

    async def post(self, user: str) -> None:
        user = self.user_arg(user)
        settings = self.state.settings
        if self._too_large:
            raise ProtocolError(413, "payload_too_large", f"body over {self.body_limit()} bytes")
        prefix = self.get_query_argument("id", None) or uuid.uuid4().hex[:12]
        if len(prefix) > 100 or not EXEC_ID_RE.match(prefix):
            raise ProtocolError(
                400, "invalid_field", "'id' must be 1-100 characters of A-Z a-z 0-9 . _ : @ -"
            )
        raw_timeout = self.get_query_argument("timeout", None)
        try:
            timeout = None if raw_timeout is None else float(raw_timeout)
        except ValueError:
            raise ProtocolError(400, "invalid_field", "'timeout' must be a number") from None
        area = self._area
        with os.fdopen(os.dup(self._body_fd), "rb") as body:
            head = await area.lane.run(os.pread, self._body_fd, 4, 0)
            notebook_limit = settings.files.max_file_bytes
            copied: list[str] = []
            if head == ZIP_MAGIC:
                bundle = await area.lane.run(resume.read_body_bundle, body, area, notebook_limit)
                raw = bundle.notebook
            else:
                if self._size > notebook_limit:
                    raise ProtocolError(
                        413, "payload_too_large", f"a notebook over {notebook_limit} bytes"
                    )
                if "zip" in self.request.headers.get("Content-Type", ""):
                    raise BadBundle("the body is not a zip file")
                bundle = None
                raw = await area.lane.run(os.pread, self._body_fd, self._size, 0)
            try:
                cells = await asyncio.to_thread(read_code_cells, raw)
            except BadNotebook as exc:
                raise ProtocolError(400, "bad_notebook", str(exc)) from None
            requests = resume.requests_of(
                cells, prefix, timeout, settings.max_code_bytes, settings.limits.max_timeout
            )
            if bundle is not None:
                copied = await resume.copy_files(area, bundle)
        answer = await resume.run_cells(
            self.state.registry, self.tenant, user, cells, requests, lambda: self._gone
        )
        self.write_json({"id": prefix, "files": copied, **answer})

    def _close_body(self) -> None:
        if self._body_fd >= 0:
            self._area.lane.submit(os.close, self._body_fd)  # after a write still under way
            self._body_fd = -1

    def on_connection_close(self) -> None:
        self._gone = True
        self._close_body()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._close_body()
        super().on_finish()


class BundleHandler(NotebookBase):
    """`GET .../bundle`: a zip of the notebook (with its setup cell) and the user's files,
    laid out so that unzipping it and running the notebook reproduces the session."""

    access = Access.USER

    async def get(self, user: str) -> None:
        user = self.user_arg(user)
        cells = await self.cells(user)
        files = await self.uploads(user)
        body = await asyncio.to_thread(
            lambda: dumps(notebook_dict(cells, user, setup=True, files=files)).encode()
        )
        area = self.area(user)
        built = await area.lane.run(
            write_bundle,
            area.root,
            self.state.files.staging,
            area.lane,
            self.filename(user, ".ipynb"),
            body,
            area.quota,
        )
        download = built.download
        try:
            self.set_header("Content-Type", "application/zip")
            self.set_header("Content-Length", str(download.size))
            self.set_header("Content-Disposition", _attachment(download.name))
            self.set_header("X-Content-Type-Options", "nosniff")
            if built.omitted:
                self.set_header("X-Bundle-Omitted-Files", str(len(built.omitted)))
            async for chunk in download.chunks():
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            return
        finally:
            download.close()
        self.finish()


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
