"""A session's bundle: its notebook and the user's files in one zip, and reading one back.

The zip is written into a private file in the staging dir (never held in memory, never
visible to a kernel) and streamed from there: the notebook at the top, the work dir's
visible files beside it at their relative paths (hidden files, such as the server's own
`.kss` dir, are left out), so that unzipping it and running the notebook there reproduces
the session. The zip's comment names the notebook, so reading a bundle back finds it even
when the user's files include other notebooks.
"""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from files.errors import BadBundle, FileAreaError, FileTooLarge, QuotaExceeded
from files.paths import Scan, open_file, validate_name
from files.pool import Lane
from files.transfer import MB, Download, Upload, private_file

COMMENT = b"kss-bundle notebook="
# Already compressed: stored as they are rather than deflated again for nothing.
COMPRESSED = frozenset(
    ".png .jpg .jpeg .gif .webp .zip .gz .bz2 .xz .zst .7z .parquet .pq .xlsx .xlsm .docx "
    ".pptx .npz .feather .mp3 .mp4".split()
)
MAX_ENTRIES = 20_000


@dataclass(frozen=True)
class Built:
    """A bundle on disk, and the files that did not fit within the cap."""

    download: Download
    notebook: str
    omitted: list[str]


def _zip_info(name: str, mtime: float) -> zipfile.ZipInfo:
    stamp = time.localtime(max(mtime, 315_532_800))  # zip times start in 1980
    info = zipfile.ZipInfo(name, date_time=stamp[:6])
    suffix = os.path.splitext(name)[1].lower()
    info.compress_type = zipfile.ZIP_STORED if suffix in COMPRESSED else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def write_bundle(
    root: Path,
    staging: Path,
    lane: Lane,
    notebook_name: str,
    notebook: bytes,
    max_bytes: int,
) -> Built:
    """The zip of `notebook` and the visible files under `root` (blocking; in the lane).
    Files past `max_bytes` in all are left out and named in `omitted`."""
    entries = sorted(Scan(root, visible_only=True))
    names = {name for name, _ in entries}
    if notebook_name in names:  # the user has a file of that name: keep both
        notebook_name = notebook_name.removesuffix(".ipynb") + "-session.ipynb"
    fd = private_file(staging)
    omitted: list[str] = []
    try:
        with open(os.dup(fd), "w+b") as f:
            with zipfile.ZipFile(f, "w", compresslevel=1) as zf:
                zf.comment = COMMENT + notebook_name.encode()
                info = _zip_info(notebook_name, time.time())
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, notebook)
                total = 0
                for name, st in entries:
                    if total + st.st_size > max_bytes:
                        omitted.append(name)
                        continue
                    total += _add_file(zf, root, name)
            size = f.seek(0, os.SEEK_END)
    except BaseException:
        os.close(fd)
        raise
    download = Download(
        name=notebook_name.removesuffix(".ipynb") + ".zip",
        size=size,
        mime_type="application/zip",
        modified=time.time(),
        etag="",
        lane=lane,
        fd=fd,
    )
    return Built(download, notebook_name, omitted)


def _add_file(zf: zipfile.ZipFile, root: Path, name: str) -> int:
    """Add the file `name` (never through a symlink); the bytes added (0 if it is gone)."""
    try:
        src, st = open_file(root, name)
    except (FileAreaError, OSError):  # gone or replaced since the scan
        return 0
    copied = 0
    try:
        info = _zip_info(name, st.st_mtime)
        with zf.open(info, "w", force_zip64=st.st_size > (1 << 31)) as dst:
            while chunk := os.read(src, MB):
                dst.write(chunk)
                copied += len(chunk)
    finally:
        os.close(src)
    return copied


@dataclass(frozen=True)
class Bundle:
    """A bundle read back: its notebook, and the files to put in the work dir."""

    zip: zipfile.ZipFile
    notebook: bytes
    files: list[zipfile.ZipInfo]

    def extract(self, info: zipfile.ZipInfo, upload: Upload) -> None:
        """Stream one file into `upload` (blocking; in the lane): the upload checks the
        limits on the bytes that really come out, whatever the zip says of them."""
        with self.zip.open(info) as src:
            while chunk := src.read(MB):
                upload.write(chunk)


def read_bundle(f: BinaryIO, max_file_bytes: int, quota: int, notebook_limit: int) -> Bundle:
    """The notebook and the file entries of a bundle, checked before anything is written:
    names (as file names of a work dir), sizes (each file, all of them, the notebook)."""
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile as exc:
        raise BadBundle(f"not a zip file: {exc}") from None
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise BadBundle(f"the bundle has more than {MAX_ENTRIES} entries")
    named = zf.comment.removeprefix(COMMENT).decode(errors="replace")
    top = [i for i in infos if i.filename.endswith(".ipynb") and "/" not in i.filename]
    chosen = next((i for i in top if zf.comment.startswith(COMMENT) and i.filename == named), None)
    if chosen is None:
        if len(top) != 1:
            raise BadBundle("the bundle must have exactly one notebook (.ipynb) at its top")
        chosen = top[0]
    if chosen.file_size > notebook_limit:
        raise BadBundle(f"the notebook is larger than {notebook_limit} bytes")
    files, total = [], 0
    for info in infos:
        if info is chosen or info.is_dir():
            continue
        validate_name(info.filename)
        if info.file_size > max_file_bytes:
            raise FileTooLarge(
                f"{info.filename!r} is larger than the file size limit of {max_file_bytes} bytes"
            )
        total += info.file_size
        if total > quota:
            raise QuotaExceeded(f"the bundle's files are more than the quota of {quota} bytes")
        files.append(info)
    with zf.open(chosen) as nb:
        notebook = nb.read(notebook_limit + 1)
    if len(notebook) > notebook_limit:
        raise BadBundle(f"the notebook is larger than {notebook_limit} bytes")
    return Bundle(zf, notebook, files)
