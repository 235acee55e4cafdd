"""Tool schemas for the model, and one call that answers the model's tool calls.

    tools = kss_client.tool_schemas("anthropic", timeout=60)    # pass to the model
    ...
    messages += await kss_client.handle_tool_calls(session, tool_use_blocks, "anthropic")

`run_python` runs code in the user's session and answers with `for_model`'s content;
`list_files` lists the work dir. The description tells the model what is true of this
server: state persists between calls, where files are, what is installed, that there is
no network, and the time limit. A call the server cannot serve (down, wrong key, busy,
over capacity, a timeout of the HTTP call) is answered with a one-line explanation
marked as an error, unless the caller asks for the `KssError` with `raise_errors=True`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .client import Session
from .errors import KssError, explain
from .model import DEFAULT_MAX_CHARS, model_view
from .providers import (
    Provider,
    ToolCall,
    ToolOutput,
    content_blocks,
    detect,
    parse_tool_call,
    tool_result_messages,
    tool_schema,
)
from .text import human_size

RUN_PYTHON = "run_python"
LIST_FILES = "list_files"
TOOL_NAMES = frozenset({RUN_PYTHON, LIST_FILES})

# kernel-requirements.txt of the server this client ships with.
LIBRARIES = (
    "pandas",
    "numpy",
    "matplotlib",
    "seaborn",
    "scipy",
    "scikit-learn",
    "statsmodels",
    "sympy",
    "pyarrow",
    "openpyxl",
    "pillow",
)
WORK_DIR = "/mnt/data"  # the kernel's current directory in the sandbox


def run_python_description(
    *,
    timeout: float = 60,
    files: Sequence[str] = (),
    libraries: Sequence[str] = LIBRARIES,
    work_dir: str = WORK_DIR,
) -> str:
    """What the model should know before it writes code for this server."""
    listed = ", ".join(files[:30]) + (f" and {len(files) - 30} more" if len(files) > 30 else "")
    file_line = (
        f"The user's files there now: {listed}. " if files else "Files the user uploads are there. "
    )
    return (
        "Run Python code in a persistent Jupyter (IPython) kernel and see what it printed, "
        "its last expression's value, errors, figures and files it wrote. State persists "
        "between calls: variables, imports and functions from earlier calls are still "
        "defined, unless a result says the kernel was restarted. "
        f"The current directory is {work_dir}, the user's work dir. {file_line}"
        "Read files by name (pd.read_csv('sales.csv')) or with load_file(name), which "
        "returns a DataFrame for CSV/TSV/Excel/JSON/Parquet, text for text files and a PIL "
        "image for images; FILES lists them. Save files the user should get to the current "
        "directory; their download URLs come back in the result. Show charts with "
        "plt.show(): each figure comes back to you as an image. "
        f"Installed: {', '.join(libraries)}. There is no network access: pip install and "
        f"web requests fail. Each call may run for at most {timeout:g} seconds. Long "
        "output is shortened for you; print summaries (df.head(), df.describe()) rather "
        "than whole tables."
    )


def _code_parameters() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "code": {
                "type": "string",
                "description": "Python code to run; the value of its last line is shown.",
            }
        },
        "required": ["code"],
        "additionalProperties": False,
    }


def tool_schemas(
    provider: Provider | str,
    *,
    timeout: float = 60,
    files: Sequence[str] = (),
    libraries: Sequence[str] = LIBRARIES,
    work_dir: str = WORK_DIR,
    list_files: bool = True,
) -> list[dict[str, Any]]:
    """`run_python` (and `list_files`) as `provider`'s tool definitions."""
    p = Provider(provider)
    description = run_python_description(
        timeout=timeout, files=files, libraries=libraries, work_dir=work_dir
    )
    defs = [tool_schema(p, RUN_PYTHON, description, _code_parameters())]
    if list_files:
        empty = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
        defs.append(
            tool_schema(
                p,
                LIST_FILES,
                "List the files in the user's work dir (the kernel's current directory): "
                "names, sizes, whether uploaded or written by code, and download URLs.",
                empty,
            )
        )
    return defs


async def _files_text(session: Session) -> str:
    files = await session.files()
    if not files:
        return "The work dir is empty."
    noun = "file" if len(files) == 1 else "files"
    lines = [f"{len(files)} {noun} in the work dir (download URLs need the API key):"]
    for f in files:
        origin = f", {f.origin}" if f.origin else ""
        lines.append(f"- {f.name} ({human_size(f.size)}{origin}): {f.url}")
    return "\n".join(lines)


async def run_tool_call(
    session: Session,
    call: ToolCall,
    provider: Provider,
    *,
    timeout: float | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    raise_errors: bool = False,
) -> ToolOutput:
    """Carry out one parsed tool call; its output as `provider` content blocks."""

    def text(message: str, is_error: bool) -> ToolOutput:
        return ToolOutput(call.id, content_blocks(message, [], provider), is_error)

    if call.name not in TOOL_NAMES:
        return text(f"Unknown tool {call.name!r}; this one offers {', '.join(TOOL_NAMES)}.", True)
    if call.problem:
        return text(f"The call was not run: {call.problem}.", True)
    try:
        if call.name == LIST_FILES:
            return text(await _files_text(session), False)
        code = call.arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            return text("The call was not run: 'code' must be a non-empty string.", True)
        result = await session.run(code, timeout=timeout)
    except KssError as exc:
        if raise_errors:
            raise
        return text(explain(exc), True)
    view = model_view(result, max_chars=max_chars)
    images = [(i.mime, i.data) for i in view.images]
    return ToolOutput(call.id, content_blocks(view.text, images, provider), view.is_error)


async def handle_tool_calls(
    session: Session,
    calls: Iterable[Any],
    provider: Provider | str | None = None,
    *,
    timeout: float | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    raise_errors: bool = False,
) -> list[dict[str, Any]]:
    """Run every tool call of one model turn, in order, in `session`; return the messages
    (Responses: input items) to append to the conversation. `calls` are the provider's
    objects or dicts (`message.tool_calls`, `function_call` items, `tool_use` blocks); the
    provider is detected from their shape unless given."""
    outputs: list[ToolOutput] = []
    chosen = None if provider is None else Provider(provider)
    for raw in calls:
        p = chosen or detect(raw)
        chosen = p
        output = await run_tool_call(
            session,
            parse_tool_call(raw, p),
            p,
            timeout=timeout,
            max_chars=max_chars,
            raise_errors=raise_errors,
        )
        outputs.append(output)
    if chosen is None:
        return []
    return tool_result_messages(chosen, outputs)


async def handle_tool_call(
    session: Session,
    call: Any,
    provider: Provider | str | None = None,
    *,
    timeout: float | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    raise_errors: bool = False,
) -> list[dict[str, Any]]:
    """`handle_tool_calls` for a single call."""
    return await handle_tool_calls(
        session, [call], provider, timeout=timeout, max_chars=max_chars, raise_errors=raise_errors
    )
