"""What the file area tests share: sizes in whole blocks, a settable clock, an upload in
chunks, and the names the rules accept and refuse."""

from __future__ import annotations

from pathlib import Path

from files.area import FileArea, FileInfo

HOUR = 3600.0
BLOCK = 4096  # sizes in whole blocks: what a file takes on disk is then its size


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def upload(area: FileArea, name: str, data: bytes, chunk: int = 1000) -> FileInfo:
    up = await area.aopen_upload(name)
    try:
        for i in range(0, len(data), chunk):
            await up.awrite(data[i : i + chunk])
        [info] = await area.acommit(up)
        return info
    finally:
        up.abort()


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def names(area: FileArea) -> list[str]:
    return [f.name for f in (await area.alist()).files]


GOOD = ["sales.csv", "reports/q1/summary.txt", "données 2024.csv", "日本語.txt", "a" * 255]
BAD = [
    "",
    "..",
    "../secret",
    "a/../../b",
    "a/./b",
    "/etc/passwd",
    "a//b",
    "a/",
    "a\x00b",
    "a\nb",
    "tab\there",
    "del\x7f",
    "a" * 256,
    "é" * 128,  # 256 bytes in UTF-8
    "..\\..\\windows",
    ".hidden",
    "dir/.hidden",
    ".ipynb_checkpoints/x.csv",
]
