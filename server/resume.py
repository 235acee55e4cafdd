"""Resume from a notebook: a bundle's files into the work dir, then its code cells, in order,
in the user's session.

Each cell is an ordinary execution of the session (queued, streamed to every WebSocket of
the session with the id `<prefix>-<cell index>`, recorded in the transcript), submitted
once the one before it has finished. The setup cell (`kss-setup`) is skipped: the kernel
has `load_file` and `FILES` already. A cell tagged `raises-exception` may fail; the first
other failure stops the run. The answer says which cells ran, which failed, which were
skipped and why.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

from files.area import FileArea
from files.bundle import Bundle, read_bundle
from files.errors import BadBundle
from kernels.registry import SessionRegistry
from kernels.states import CellStatus
from transcript.notebook import CodeCell

from .protocol import ExecuteRequest, ProtocolError, parse_execute

COMMIT_BATCH = 100  # files staged at once (each holds a few descriptors until committed)
BROKEN_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


def read_body_bundle(f: BinaryIO, area: FileArea, notebook_limit: int) -> Bundle:
    """The bundle in `f`, its names and sizes checked (blocking; in the user's lane)."""
    try:
        return read_bundle(f, area.max_file_bytes, area.quota, notebook_limit)
    except BROKEN_ZIP as exc:
        raise BadBundle(f"the zip is damaged: {exc}") from None


async def copy_files(area: FileArea, bundle: Bundle) -> list[str]:
    """Put the bundle's files into the work dir through the file area (names, file size,
    quota), as uploads; the names copied."""
    copied: list[str] = []
    files = bundle.files
    for start in range(0, len(files), COMMIT_BATCH):
        uploads = []
        try:
            for info in files[start : start + COMMIT_BATCH]:
                upload = await area.aopen_upload(info.filename, info.file_size)
                uploads.append(upload)
                try:
                    await area.lane.run(bundle.extract, info, upload)
                except BROKEN_ZIP as exc:
                    raise BadBundle(f"{info.filename!r} is damaged in the zip: {exc}") from None
            copied += [info.name for info in await area.acommit(*uploads)]
        finally:
            for upload in uploads:
                upload.discard()
    return copied


def requests_of(
    cells: list[CodeCell], prefix: str, timeout: float | None, max_code_bytes: int, max_timeout
) -> list[ExecuteRequest | None]:
    """Each code cell as an execute request, checked before anything runs; None for the
    cells that are not run (the setup cell, empty cells)."""
    found: list[ExecuteRequest | None] = []
    for cell in cells:
        if cell.setup or not cell.source.strip():
            found.append(None)
            continue
        body = {"code": cell.source, "id": f"{prefix}-{cell.index}", "timeout": timeout}
        try:
            found.append(parse_execute(body, max_code_bytes, max_timeout))
        except ProtocolError as exc:
            exc.message = f"cell {cell.index}: {exc.message}"  # the same error, located
            raise
    return found


async def run_cells(
    registry: SessionRegistry,
    tenant: str,
    user: str,
    cells: list[CodeCell],
    requests: list[ExecuteRequest | None],
    gone: Callable[[], bool],
) -> dict[str, Any]:
    """Run the cells in order in the user's session; stop at the first failure not allowed
    by a `raises-exception` tag, or when the client has gone (`gone()`)."""
    session, _ = await registry.ensure(tenant, user)
    ran: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    failed: dict[str, Any] | None = None
    for cell, request in zip(cells, requests, strict=True):
        where = {"cell": cell.index, "id": cell.id}
        if request is None:
            skipped.append({**where, "why": "setup" if cell.setup else "empty"})
            continue
        if failed is not None or gone():
            why = "after a failure" if failed is not None else "the client went away"
            skipped.append({**where, "why": why})
            continue
        execution = session.submit(request.code, request.id, request.timeout)
        done = await execution.done
        entry = {
            **where,
            "exec_id": done.id,
            "status": str(done.status),
            "execution_count": done.execution_count,
        }
        ran.append(entry)
        if done.status != CellStatus.OK and not cell.may_fail:
            failed = {**entry, "error": done.summary()["error"]}
    return {"ran": ran, "failed": failed, "skipped": skipped}


def write_chunk(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]
