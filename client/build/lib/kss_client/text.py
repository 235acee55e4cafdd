"""Text made fit for a model: ANSI escapes out, progress bars settled, long text cut.

Long output is cut head-and-tail: the start says what the code set out to do, the end
holds the final numbers and the error, so both stay and the middle goes, replaced by a
marker saying how much was cut. `share` splits one character budget between sections so
that small sections stay whole and large ones split what is left.
"""

from __future__ import annotations

import re

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
HEAD_SHARE = 0.6  # of a cut text's room, for its head; the tail gets the rest


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def settle_carriage_returns(text: str) -> str:
    """Each line as a terminal would leave it: `\\r` progress bars keep their last state."""
    if "\r" not in text:
        return text
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rsplit("\r", 1)[-1] if "\r" in line else line for line in lines)


def marker(cut_chars: int, cut_lines: int) -> str:
    lines = f", {cut_lines:,} line{'s' if cut_lines != 1 else ''}" if cut_lines else ""
    return f"\n[... {cut_chars:,} characters cut{lines} ...]\n"


def cut(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head and tail around a marker
    (the result may exceed a tiny `limit` by the marker's length)."""
    if len(text) <= limit:
        return text
    room = max(0, limit - len(marker(len(text), text.count("\n"))))
    head_len = int(room * HEAD_SHARE)
    tail_len = room - head_len
    # Cut at line ends where one is near, so numbers and words are not split.
    head = text[:head_len]
    newline = head.rfind("\n")
    if newline > head_len * 0.8:
        head = head[: newline + 1]
    tail = text[len(text) - tail_len :] if tail_len else ""
    newline = tail.find("\n")
    if 0 <= newline < tail_len * 0.2:
        tail = tail[newline + 1 :]
    middle = text[len(head) : len(text) - len(tail)]
    return head.rstrip("\n") + marker(len(middle), middle.count("\n")) + tail


def share(budget: int, sizes: list[int]) -> list[int]:
    """Split `budget` over sections of `sizes`: a section that fits in an equal share keeps
    its size, and what it leaves goes to the larger ones (water-filling)."""
    limits = [0] * len(sizes)
    left = max(0, budget)
    pending = sorted(range(len(sizes)), key=lambda i: sizes[i])
    while pending:
        fair = left // len(pending)
        i = pending[0]
        if sizes[i] <= fair:
            limits[i] = sizes[i]
            left -= sizes[i]
            pending.pop(0)
            continue
        for j in pending:
            limits[j] = fair
        break
    return limits


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
