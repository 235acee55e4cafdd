"""HTTP handlers of a session's files: list (paginated), upload (raw PUT or multipart POST),
download, delete. Bodies stream straight into `files.area.Upload` (limits checked as bytes
arrive) and downloads stream from a private copy of one version in 64 KiB chunks; nothing
large is held whole in memory. All file work runs in the user's lane of the fair file pool
(`state.files.pool`), never on the default executor.

The body limit is per method (`body_limit`): a file for PUT, the quota for a multipart
POST. Errors are the file area's domain errors, which `server/errors.py` maps to statuses.

Answers with file URLs sign them on request (`?links=signed[&ttl=]`, `ApiHandler.link`); a
download also opens with a signed link instead of a key.

Multipart bodies go through `server.form_data` (the `multipart` package's push parser; why
that library is written there): each file part streams into its own upload as it arrives.

Routes (see `FILE_ROUTES`): `GET/POST /api/sessions/{user}/files`,
`PUT/GET/DELETE /api/sessions/{user}/files/{name}` (a name may contain `/`).
"""

from __future__ import annotations

import logging
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import quote

import tornado.web
from tornado.iostream import StreamClosedError

from files.area import (
    LIST_LIMIT,
    MAX_LIST_LIMIT,
    BadFileName,
    FileArea,
    FileAreaError,
    Upload,
    validate_name,
)

from .api import ApiHandler
from .auth import Access
from .errors import error_status
from .form_data import FormDataError, MultipartSegment, file_name, form_parser
from .protocol import ProtocolError

if TYPE_CHECKING:
    from .state import AppState

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 1024 * 1024  # part headers and boundaries on top of the files
CHUNKED_SLACK = 1024 * 1024


def file_area(state: AppState, tenant: str, user: str) -> FileArea:
    """The file area of (tenant, user)."""
    return state.files.area(tenant, user)


def file_url(user: str, name: str) -> str:
    """Download path of a file, for listings, `file` events and execute results."""
    return f"/api/sessions/{quote(user, safe='')}/files/{quote(name, safe='/')}"


def content_disposition(name: str) -> str:
    """`attachment` (never inline: generated HTML must not run on our origin), with an
    ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    leaf = name.rsplit("/", 1)[-1]
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in leaf)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(leaf, safe='')}"


def page_args(handler: ApiHandler) -> tuple[str | None, int]:
    """`?after=` and `?limit=` of a listing, checked."""
    raw = handler.get_query_argument("limit", str(LIST_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
        raise ProtocolError(400, "invalid_field", f"'limit' must be 1 to {MAX_LIST_LIMIT}")
    after = handler.get_query_argument("after", None)
    if after is not None:
        try:
            validate_name(after)
        except BadFileName:
            raise ProtocolError(
                400, "invalid_field", "'after' must be a file name: a listing's 'next'"
            ) from None
    return after, int(raw)


class FilesBase(ApiHandler):
    """Shared plumbing: the user's file area, domain errors as API errors, and a way to
    answer at once from `body_received` while the client is still sending."""

    access = Access.USER

    def initialize(self, state: AppState) -> None:  # type: ignore[override]
        super().initialize(state)
        self._failed = False
        self._upload: Upload | None = None  # PUT
        self._uploads: dict[str, Upload] = {}  # multipart POST
        self._current: Upload | None = None

    def area(self, user: str) -> FileArea:
        return file_area(self.state, self.tenant, self.user_arg(user))

    def fail_now(self, exc: BaseException) -> None:
        """Answer with the error now; tornado then closes the connection instead of
        reading the rest of the body."""
        self._failed = True
        if not self._finished:
            self.send_error(error_status(exc)[0], exc_info=(type(exc), exc, None))


class FilesHandler(FilesBase):
    """`GET .../files` lists; `POST .../files` takes multipart/form-data with file parts,
    all or nothing: every file is committed only once the whole body has arrived."""

    def body_limit(self) -> int:
        if self.request.method == "POST":
            return self.state.settings.files.quota + MULTIPART_OVERHEAD
        return super().body_limit()

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "POST" or self.forwarding:
            return
        self._area = self.area(self.path_args[0])
        try:
            self._parser = form_parser(self.request.headers.get("Content-Type"))
        except FormDataError as exc:
            raise ProtocolError(400, "bad_multipart", str(exc)) from None
        self.request.connection.set_max_body_size(self.body_limit())

    async def get(self, user: str) -> None:
        after, limit = page_args(self)
        ttl = self.link_ttl()
        page = await self.area(user).alist(after, limit)
        files = [
            {**info.as_dict(), "url": self.link(file_url(user, info.name), ttl)}
            for info in page.files
        ]
        self.write_json({"files": files, "next": page.next, "truncated": page.truncated})

    async def body_received(self, chunk: bytes) -> None:  # type: ignore[override]
        if self._failed or self.request.method != "POST" or not chunk:
            return  # an empty chunk would tell the parser that the body ended
        try:
            # Events: a part's headers, its body in pieces, None at its end.
            for event in self._parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    self._current = await self._start_part(event)
                elif self._current is None:
                    continue  # a plain form field: ignored
                elif event is None:
                    self._current = None
                else:
                    await self._current.awrite(event)
        except (FileAreaError, FormDataError) as exc:
            self._abort_all()
            if isinstance(exc, FormDataError):
                exc = ProtocolError(400, "bad_multipart", str(exc))
            self.fail_now(exc)

    async def _start_part(self, part: MultipartSegment) -> Upload | None:
        name = file_name(part)
        if name is None:
            return None
        if name in self._uploads:
            raise BadFileName(f"{name!r} appears twice in one upload")
        upload = await self._area.aopen_upload(name)
        self._uploads[name] = upload
        return upload

    async def post(self, user: str) -> None:
        try:
            self._parser.close()
        except FormDataError as exc:
            self._abort_all()
            raise ProtocolError(400, "bad_multipart", str(exc)) from None
        if not self._uploads:
            raise ProtocolError(400, "no_files", "the form has no file parts (with a filename)")
        ttl = self.link_ttl()
        try:
            infos = await self._area.acommit(*self._uploads.values())
        finally:
            self._abort_all()
        files = [
            {**info.as_dict(), "url": self.link(file_url(user, info.name), ttl)} for info in infos
        ]
        self.write_json({"files": files}, 201)

    def _abort_all(self) -> None:
        # In the lane: a write of one of them may still be under way (a closed connection).
        for upload in self._uploads.values():
            upload.discard()
        self._uploads.clear()
        self._current = None

    def on_connection_close(self) -> None:
        self._abort_all()
        super().on_connection_close()

    def on_finish(self) -> None:
        self._abort_all()
        super().on_finish()


class FileHandler(FilesBase):
    """`PUT` a raw body as the file `name`, `GET` it (streamed; also with a signed link),
    `DELETE` it."""

    access = Access.LINK

    def body_limit(self) -> int:
        if self.request.method == "PUT":
            return self.state.settings.files.max_file_bytes
        return super().body_limit()

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "PUT" or self.forwarding:
            return
        user, name = self.path_args
        self._area = self.area(user)
        self._upload = await self._area.aopen_upload(name, self.content_length)
        # Chunked bodies have no length: tornado checks each chunk's declared size before
        # handing us its bytes, so leave room past the limit for Upload to answer first.
        self.request.connection.set_max_body_size(self.body_limit() + CHUNKED_SLACK)

    async def body_received(self, chunk: bytes) -> None:  # type: ignore[override]
        if self._failed or self._upload is None:
            return
        try:
            await self._upload.awrite(chunk)
        except FileAreaError as exc:
            self.fail_now(exc)

    async def put(self, user: str, name: str) -> None:
        assert self._upload is not None
        ttl = self.link_ttl()
        [info] = await self._area.acommit(self._upload)
        self.write_json({**info.as_dict(), "url": self.link(file_url(user, name), ttl)}, 201)

    async def get(self, user: str, name: str) -> None:
        download = await self.area(user).aopen_for_download(name)
        try:
            self.set_header("Content-Type", download.mime_type)
            self.set_header("Content-Length", str(download.size))
            self.set_header("Content-Disposition", content_disposition(name))
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("ETag", download.etag)
            self.set_header("Last-Modified", formatdate(download.modified, usegmt=True))
            async for chunk in download.chunks():
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            log.info("download of %s stopped: the client went away", name)
            return
        finally:
            download.close()
        self.finish()

    async def delete(self, user: str, name: str) -> None:
        await self.area(user).adelete(name)
        self.write_json({"name": name, "deleted": True})

    def on_connection_close(self) -> None:
        if self._upload is not None:
            self._upload.discard()
        super().on_connection_close()

    def on_finish(self) -> None:
        if self._upload is not None:
            self._upload.discard()  # a no-op after commit
        super().on_finish()


FILE_ROUTES: list[tuple[str, type[tornado.web.RequestHandler]]] = [
    ("/api/sessions/{user}/files", FilesHandler),
    ("/api/sessions/{user}/files/{name}", FileHandler),
]
