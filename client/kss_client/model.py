"""Model-ready results: what a model should read of an execution, within a budget.

`model_view(result)` is provider-neutral (one text and the images); `for_model(result,
provider)` renders it as that provider's content blocks (see `providers.py`). The text
says the status first, then, each only when there is something to say:

    status: ok (0.42 s)                      or error / timeout / aborted, explained
    note: the kernel was restarted ...       variables from earlier calls are gone
    stdout: / stderr: / output: / result:    cut head-and-tail to share the budget
    error:                                   a short plain traceback ending `ename: evalue`
    files written:                           names, sizes and absolute download URLs
    images: 3 attached                       and which were left out, and why

`max_chars` bounds the text (the images are extra and capped by count and size). A
DataFrame result is its text form (pandas already shortens it to head and tail rows);
figures are image blocks, never base64 in the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .providers import Provider, content_blocks
from .results import ExecutionResult, ExecutionStatus, FileChange
from .text import cut, human_size, settle_carriage_returns, share, strip_ansi
from .tracebacks import short_traceback

DEFAULT_MAX_CHARS = 8000
DEFAULT_MAX_IMAGES = 3
DEFAULT_MAX_IMAGE_BYTES = 2_000_000  # decoded; providers take ~5-20 MB, models see less
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_FILES_LISTED = 20
ERROR_SHARE = 0.5  # of the room left after the fixed lines, at most, for the traceback

RESTARTED = (
    "note: the kernel was restarted before this call (a crash, a timeout or a restart): "
    "variables, imports and functions from earlier calls are gone; re-run the code that "
    "defined what you need."
)


RESTORED = (
    "note: the kernel had been shut down while idle and was started again before this "
    "call; the server restored the earlier variables: {restored}."
)
LOST = " Not restored (re-create them if you need them): {lost}."


def _restored_note(restored: list[Any], lost: Any) -> str:
    """What came back from hibernation, and what did not (the server's `restored`/`lost`)."""
    names = ", ".join(str(n) for n in restored[:40]) + (", ..." if len(restored) > 40 else "")
    note = RESTORED.format(restored=names or "none")
    gone = [x for x in lost if isinstance(x, dict)] if isinstance(lost, list) else []
    if gone:
        note += LOST.format(lost=", ".join(f"{x.get('name')} ({x.get('why')})" for x in gone[:40]))
    return note


@dataclass(frozen=True)
class Image:
    mime: str
    data: str  # base64

    @property
    def size(self) -> int:
        """Decoded bytes."""
        return len(self.data) * 3 // 4 - self.data[-2:].count("=")


@dataclass(frozen=True)
class ModelView:
    """What the model sees of one execution, before any provider's format."""

    text: str
    images: list[Image] = field(default_factory=list)
    is_error: bool = False


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _bundle_text(data: dict[str, Any]) -> str:
    for mime in ("text/plain", "text/markdown", "application/json"):
        if mime in data:
            return _joined(data[mime])
    kinds = ", ".join(sorted(data)) or "nothing"
    return f"[a value with no text form: {kinds}]"


@dataclass
class _Parts:
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    displays: list[str] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


def _collect(result: ExecutionResult) -> _Parts:
    parts = _Parts()
    for out in result.outputs:
        kind = out.get("output_type")
        if kind == "stream":
            target = parts.stderr if out.get("name") == "stderr" else parts.stdout
            target.append(_joined(out.get("text", "")))
        elif kind in ("display_data", "execute_result"):
            data = out.get("data") or {}
            images = [Image(m, "".join(_joined(data[m]).split())) for m in IMAGE_TYPES if m in data]
            parts.images += images[:1]  # one picture per output, in its best type
            if not images and kind == "display_data":
                parts.displays.append(_bundle_text(data))
    if not parts.stdout and result.stdout:
        parts.stdout.append(result.stdout)
    if not parts.stderr and result.stderr:
        parts.stderr.append(result.stderr)
    return parts


def _status_line(result: ExecutionResult) -> str:
    seconds = f"{result.duration_ms / 1000:.2f} s"
    error = result.error
    if result.status is ExecutionStatus.OK:
        return f"status: ok ({seconds})"
    if result.status is ExecutionStatus.TIMEOUT:
        return (
            f"status: timeout: the code was still running at its time limit and was "
            f"interrupted after {seconds}; its output up to then is below. Make it faster "
            "(work on a sample, vectorise) or split it into smaller steps."
        )
    if result.status is ExecutionStatus.ABORTED:
        return (
            "status: aborted: the kernel was restarted or shut down while this code ran; "
            "it did not finish and its variables are gone."
        )
    if error is not None and error.ename == "KernelDied":
        return (
            f"status: error: the Python process died ({error.evalue}), for example from "
            "running out of memory or a crash in native code. All variables are gone; the "
            "next call starts a fresh kernel."
        )
    if error is not None and error.ename == "DiskQuotaExceeded":
        return f"status: error: stopped because the user's file storage is full ({error.evalue})."
    if error is not None and error.ename == "KeyboardInterrupt":
        return f"status: error: interrupted after {seconds}."
    name = f" ({error.ename})" if error is not None else ""
    return f"status: error{name}: the code raised an exception; the traceback is below."


def _files_lines(files: list[FileChange]) -> list[str]:
    if not files:
        return []
    lines = ["files written (download URLs need the API key):"]
    for f in files[:MAX_FILES_LISTED]:
        lines.append(f"- {f.name} ({human_size(f.size)}, {f.event}): {f.url}")
    if len(files) > MAX_FILES_LISTED:
        lines.append(f"- ... and {len(files) - MAX_FILES_LISTED} more")
    return lines


def _pick_images(
    images: list[Image], max_images: int, max_image_bytes: int
) -> tuple[list[Image], str]:
    kept: list[Image] = []
    too_big = 0
    for image in images:
        if image.size > max_image_bytes:
            too_big += 1
        elif len(kept) < max_images:
            kept.append(image)
    over_count = len(images) - len(kept) - too_big
    if not images:
        return kept, ""
    line = f"images: {len(kept)} attached"
    if over_count:
        line += f"; {over_count} more left out (at most {max_images} per call)"
    if too_big:
        line += f"; {too_big} left out for size (over {human_size(max_image_bytes)})"
    if not kept:
        line += "; save figures to files and describe them instead"
    return kept, line


def model_view(
    result: ExecutionResult,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> ModelView:
    """The text (at most `max_chars`) and images a model should see of `result`."""
    parts = _collect(result)
    images, images_line = _pick_images(parts.images, max_images, max_image_bytes)
    head = [_status_line(result)]
    if isinstance(result.extra.get("restored"), list):
        head.append(_restored_note(result.extra["restored"], result.extra.get("lost")))
    elif result.kernel_restarted:
        head.append(RESTARTED)
    if result.truncated:
        head.append("note: the server cut this execution's output at its size limit.")
    tail = _files_lines(result.files) + ([images_line] if images_line else [])
    fixed = sum(len(line) + 1 for line in head + tail)

    sections: list[tuple[str, str]] = []
    for title, joined in (
        ("stdout", "".join(parts.stdout)),
        ("stderr", "".join(parts.stderr)),
        ("output", "\n".join(parts.displays)),
    ):
        text = settle_carriage_returns(strip_ansi(joined))
        if text.strip():
            sections.append((title, text.rstrip("\n")))
    if result.result is not None:
        sections.append(("result", strip_ansi(_bundle_text(result.result))))
    room = max(0, max_chars - fixed - sum(len(t) + 3 for t, _ in sections) - 8)

    error_text = ""
    if result.error is not None and result.status is not ExecutionStatus.ABORTED:
        if result.error.ename == "KernelDied" or not result.error.traceback:
            error_text = short_traceback(result.error, max(200, room))
        else:
            error_text = short_traceback(result.error, max(200, int(room * ERROR_SHARE)))
        room = max(0, room - len(error_text) - 8)

    limits = share(room, [len(text) for _, text in sections])
    body: list[str] = []
    for (title, text), limit in zip(sections, limits, strict=True):
        body += [f"{title}:", cut(text, limit)]
    if error_text:
        body += ["error:", error_text]
    is_error = result.status is not ExecutionStatus.OK
    return ModelView("\n".join(head + body + tail), images, is_error)


def for_model(
    result: ExecutionResult,
    provider: Provider | str,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> list[dict[str, Any]]:
    """The content blocks a model of `provider` should see for `result`: text first, then
    the images (`openai_chat`: text and image_url parts; `openai_responses`: input_text
    and input_image; `anthropic`: text and base64 image blocks)."""
    view = model_view(
        result, max_chars=max_chars, max_images=max_images, max_image_bytes=max_image_bytes
    )
    return content_blocks(view.text, [(i.mime, i.data) for i in view.images], Provider(provider))
