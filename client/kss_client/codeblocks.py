"""Code blocks from a model's markdown reply, run for real, for models without tool calls.

The older pattern of chatbots that "force real execution instead of simulated output":
the model writes fenced Python blocks in its reply, the host runs them in order in the
user's session (stopping at the first error by default, since later blocks usually build
on earlier ones), and sends what really happened back as the next user message.

Fences follow CommonMark: three or more backticks or tildes, indented at most three
spaces, closed by the same character at least as many times. Blocks tagged `python`,
`py`, `python3`, `ipython` or `ipython3` are Python; untagged blocks only on request
(models also use them for shell commands and sample output). An unclosed block (a reply
cut off mid-block) is never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .client import Session
from .errors import KssError, explain
from .model import DEFAULT_MAX_CHARS, ModelView, model_view
from .providers import Block, Provider, content_blocks
from .results import ExecutionResult

FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^`\n]*)$")
PYTHON_TAGS = frozenset({"python", "py", "python3", "ipython", "ipython3"})


def leading_spaces(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def closes(line: str, fence: str) -> bool:
    """A closing fence: the opening's character, at least as many, nothing else."""
    stripped = line.strip()
    return leading_spaces(line) <= 3 and len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def extract_code_blocks(markdown: str, *, include_untagged: bool = False) -> list[str]:
    """The fenced Python blocks of `markdown`, in order."""
    blocks: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = len(opening.group(1)), opening.group(2), opening.group(3)
        tag = info.strip().split(" ", 1)[0].strip("{}.").lower() if info.strip() else ""
        body: list[str] = []
        i += 1
        closed = False
        while i < len(lines):
            line = lines[i]
            i += 1
            if closes(line, fence):
                closed = True
                break
            body.append(line[min(indent, leading_spaces(line)) :])
        wanted = tag in PYTHON_TAGS or (include_untagged and not tag)
        if closed and wanted and "\n".join(body).strip():
            blocks.append("\n".join(body))
    return blocks


@dataclass(frozen=True)
class BlockRun:
    """One block and what became of it: a result, an error explanation, or not run."""

    code: str
    result: ExecutionResult | None = None
    failure: str = ""  # why the call failed (server down, ...), from `errors.explain`

    @property
    def ran(self) -> bool:
        return self.result is not None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok


async def run_code_blocks(
    session: Session,
    reply: str,
    *,
    stop_on_error: bool = True,
    timeout: float | None = None,
    include_untagged: bool = False,
) -> list[BlockRun]:
    """Run the Python blocks of `reply` in order; after a failure (with `stop_on_error`)
    the remaining blocks are returned not run."""
    runs: list[BlockRun] = []
    stopped = False
    for code in extract_code_blocks(reply, include_untagged=include_untagged):
        if stopped:
            runs.append(BlockRun(code))
            continue
        try:
            result = await session.run(code, timeout=timeout)
        except KssError as exc:
            runs.append(BlockRun(code, failure=explain(exc)))
            stopped = True
            continue
        runs.append(BlockRun(code, result))
        stopped = stop_on_error and not result.ok
    return runs


def _views(runs: list[BlockRun], max_chars: int) -> list[ModelView]:
    each = max(500, max_chars // max(1, len(runs)))
    views = []
    for n, run in enumerate(runs, 1):
        if run.result is not None:
            view = model_view(run.result, max_chars=each)
            views.append(ModelView(f"[block {n}]\n{view.text}", view.images, view.is_error))
        elif run.failure:
            views.append(ModelView(f"[block {n}] not run: {run.failure}", is_error=True))
        else:
            views.append(ModelView(f"[block {n}] not run: an earlier block failed."))
    return views


def feedback_text(runs: list[BlockRun], max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """What really happened, as the next user message for a text-only model."""
    if not runs:
        return "Your reply had no ```python code block to run."
    head = f"I ran the {len(runs)} Python block(s) of your reply. What really happened:"
    return "\n\n".join([head, *(v.text for v in _views(runs, max_chars))])


def feedback_blocks(
    runs: list[BlockRun], provider: Provider | str, max_chars: int = DEFAULT_MAX_CHARS
) -> list[Block]:
    """The same, as `provider` content blocks of a user message, with the figures."""
    images = [(i.mime, i.data) for v in _views(runs, max_chars) for i in v.images]
    return content_blocks(feedback_text(runs, max_chars), images, Provider(provider))
