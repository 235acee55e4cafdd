"""A traceback a model can use: plain text, the user's frames, library frames folded.

IPython sends tracebacks as a list of ANSI-coloured entries: a rule, a header, one entry
per frame (`Cell In[3], line 2` for the user's cells, `File /.../pandas/core/frame.py:4102,
in ...` for libraries), and the final `ename: evalue`. A model needs the user's frames with
their code and the error, not twenty lines of pandas internals, so each run of library
frames becomes one line (`... 3 frames in pandas ...`), user frames keep the lines around
their arrow, chained exceptions keep their link sentences, and the last line is always
`ename: evalue`. The notebook keeps the full traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .results import ExecutionError
from .text import cut, strip_ansi

FRAME_START = re.compile(r"^\s*(Cell In\s*\[|Input In\s*\[|File |<ipython-input-)")
FILE_PATH = re.compile(r"""^\s*File\s+"?([^",:]+)""")
HEADER = re.compile(r"^\S+\s+Traceback \(most recent call last\)\s*$")
ARROW = re.compile(r"^\s*-*>")
RULE = re.compile(r"^-{20,}$")
STDLIB = re.compile(r"/lib/python3\.\d+/([^/]+)")
FRAME_CONTEXT_BEFORE = 3
FRAME_CONTEXT_AFTER = 1
MAX_FINAL_LINE = 1000


@dataclass
class Frame:
    lines: list[str] = field(default_factory=list)
    package: str | None = None  # None: the user's own code


def library_package(header: str) -> str | None:
    """The package a frame's file belongs to, or None when it is the user's code."""
    if re.match(r"^\s*(Cell In|Input In|<ipython-input-)", header):
        return None
    match = FILE_PATH.match(header)
    if match is None:
        return None
    path = match.group(1).strip()
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    stdlib = STDLIB.search(path)
    if stdlib is not None:
        return stdlib.group(1).removesuffix(".py")
    if path.startswith("/tmp/ipykernel_"):
        return None  # a cell, as plain tracebacks name it
    if not path.startswith("/") and "/" in path:
        return path.split("/", 1)[0]  # compiled extension sources: pandas/_libs/index.pyx
    return None


def parse(entries: list[str]) -> list[Frame | str]:
    """Frames and the text lines between them, ANSI and IPython's rules removed."""
    items: list[Frame | str] = []
    frame: Frame | None = None
    for line in strip_ansi("\n".join(entries)).split("\n"):
        if RULE.match(line.strip()):
            continue
        if HEADER.match(line.strip()):
            items.append("Traceback (most recent call last):")
            frame = None
        elif FRAME_START.match(line):
            frame = Frame([line.rstrip()], library_package(line))
            items.append(frame)
        elif frame is not None and line.strip() and (line[0].isspace() or ARROW.match(line)):
            frame.lines.append(line.rstrip())
        elif frame is not None and not line.strip():
            frame = None  # the blank line IPython ends each frame with
        else:
            frame = None
            items.append(line.rstrip())
    return items


def trim_frame(frame: Frame) -> list[str]:
    """A user frame's header and the code lines around its arrow."""
    header, body = frame.lines[0], frame.lines[1:]
    arrows = [i for i, line in enumerate(body) if ARROW.match(line)]
    if not arrows:
        return [header, *body[-FRAME_CONTEXT_BEFORE:]]
    at = arrows[-1]
    return [header, *body[max(0, at - FRAME_CONTEXT_BEFORE) : at + 1 + FRAME_CONTEXT_AFTER]]


def fold(items: list[Frame | str]) -> list[str]:
    """Lines: user frames trimmed, each run of library frames as one line."""
    lines: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            packages = ", ".join(dict.fromkeys(run))
            noun = "frame" if len(run) == 1 else "frames"
            lines.append(f"  ... {len(run)} {noun} in {packages} ...")
            run.clear()

    previous: Frame | None = None
    repeats = 0
    for item in items:
        if isinstance(item, Frame) and previous is not None and item.lines == previous.lines:
            repeats += 1  # recursion: one frame over and over, as Python itself folds it
            continue
        if repeats:
            lines.append(f"  [the frame above repeated {repeats:,} more times]")
            repeats = 0
        previous = item if isinstance(item, Frame) else None
        if isinstance(item, Frame) and item.package is not None:
            run.append(item.package)
            continue
        flush()
        if isinstance(item, Frame):
            lines += trim_frame(item)
        elif item or (lines and lines[-1]):  # no runs of blank lines
            lines.append(item)
    if repeats:
        lines.append(f"  [the frame above repeated {repeats:,} more times]")
    flush()
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def short_traceback(error: ExecutionError, max_chars: int = 3000) -> str:
    """The error as short plain text that always ends with `ename: evalue`."""
    lines = fold(parse(error.traceback))
    last = lines[-1].strip() if lines else ""
    final_room = min(MAX_FINAL_LINE, max(100, max_chars // 2))
    if last == error.ename or last.startswith(f"{error.ename}:"):
        final = cut(last, final_room)  # IPython's own final line, as a person sees it
        lines.pop()
    else:
        final = cut(f"{error.ename}: {error.evalue}" if error.evalue else error.ename, final_room)
    body = "\n".join(lines).rstrip()
    if not body:
        return final
    return cut(body, max(0, max_chars - len(final) - 1)) + "\n" + final
