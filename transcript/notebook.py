"""Transcript cells -> an nbformat v4 notebook that runs on its own, and notebooks read back
to be run again (pure; nbformat is used only here).

The notebook is built as plain dicts in the nbformat 4.5 layout: nbformat's cell factories
validate every cell as they go, about a second for a 1,000-cell session. The tests validate
what this builds; `build_notebook` wraps it in a `NotebookNode` for callers that want one.

So that it runs in plain Jupyter (`nbclient`, `nbconvert --execute`), an exported notebook
with code starts with a setup cell, tagged `kss-setup` and hidden where the front end
supports it, that defines `load_file` and `FILES` exactly as the server's kernels do (it is
their start-up code, `kernels/startup/00_kss.py`), and cells that failed carry the
`raises-exception` tag, so running the whole notebook does not stop at them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import nbformat
from nbformat import NotebookNode

from kernels.launcher import STARTUP_DIR
from kernels.states import CellStatus

from .store.base import CellRecord

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
RESTART_NOTE = (
    "*Kernel restarted here ({why}): variables and imports from the cells above are no "
    "longer in memory.*"
)
RESTORE_NOTE = (
    "*Kernel restarted here (the session's kernel had been shut down while idle); its "
    "variables were restored from hibernation{restored}.{lost}*"
)
FAILED_RESTORE_NOTE = (
    "*Kernel restarted here (the session's kernel had been shut down while idle); restoring "
    "its variables failed, so variables and imports from the cells above are no longer in "
    "memory.*"
)
SETUP_TAG = "kss-setup"  # the setup cell: not the user's code, skipped when resuming
RAISES_TAG = "raises-exception"  # nbclient and nbconvert --execute go on past such a cell
FAILED = frozenset({CellStatus.ERROR, CellStatus.TIMEOUT})
SETUP_SOURCE = (
    "# Set-up (added by the server): `load_file(name)` and `FILES`, as the session had them.\n"
    + (STARTUP_DIR / "00_kss.py").read_text()
)


def _restart_reason(cell: CellRecord) -> str:
    if cell.metadata.get("kernel_restarted"):
        return "after a restart, a timeout or the kernel's death"
    return "the session's kernel had been shut down or expired"


def current_kernel_cells(cells: list[CellRecord]) -> list[CellRecord]:
    """Only what follows the last kernel change: the cells of the current kernel."""
    start = 0
    kernel = None
    for index, cell in enumerate(cells):
        kid = cell.metadata.get("kernel_id") if cell.kind == "code" else None
        if kid and kid != kernel:
            if kernel is not None:
                start = index
            kernel = kid
    # notes written just before the first cell of the new kernel belong to it
    while start > 0 and cells[start - 1].kind == "markdown":
        start -= 1
    return cells[start:] if kernel is not None else cells


def _markdown(cell_id: str, source: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": cell_id, "metadata": metadata, "source": source}


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names[:50]) + (", ..." if len(names) > 50 else "")


def _kernel_change_note(cell: CellRecord) -> str:
    restore = cell.metadata.get("restored")
    if not isinstance(restore, dict):
        return RESTART_NOTE.format(why=_restart_reason(cell))
    if restore.get("failed"):
        return FAILED_RESTORE_NOTE
    restored = [str(n) for n in restore.get("restored") or []]
    lost = [x for x in restore.get("lost") or [] if isinstance(x, dict)]
    lost_text = "; ".join(f"`{x.get('name')}` ({x.get('why')})" for x in lost[:50])
    return RESTORE_NOTE.format(
        restored=f" ({_names(restored)})" if restored else "",
        lost=f" Lost: {lost_text}." if lost else "",
    )


def setup_cell() -> dict[str, Any]:
    """The code cell that defines `load_file` and `FILES`, tagged and hidden."""
    return {
        "cell_type": "code",
        "id": SETUP_TAG,
        "execution_count": None,
        "metadata": {
            "tags": [SETUP_TAG],
            "collapsed": True,
            "jupyter": {"source_hidden": True},
            "kss": {"id": SETUP_TAG, "setup": True},  # like every code cell, a kss id
        },
        "outputs": [],
        "source": SETUP_SOURCE,
    }


def notebook_dict(
    cells: list[CellRecord],
    user: str,
    since_restart: bool = False,
    setup: bool = False,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One code cell per execution, markdown notes in place, a marker at each kernel change
    (saying what was restored, at a restore from hibernation). `setup`: start with the
    setup cell when there is code; `files`: the uploads to list in the metadata."""
    if since_restart:
        cells = current_kernel_cells(cells)
    out: list[dict[str, Any]] = []
    kernel = None
    for cell in cells:
        if cell.kind == "markdown":
            out.append(_markdown(cell.id[:64], cell.source, {"kss": {"created": cell.created}}))
            continue
        kid = cell.metadata.get("kernel_id")
        if kid and kernel is not None and kid != kernel:
            out.append(_markdown(f"restart-{len(out)}", _kernel_change_note(cell), {}))
        kernel = kid or kernel
        meta = {k: v for k, v in cell.metadata.items() if k != "kernel_id"}
        meta["status"] = cell.status
        metadata: dict[str, Any] = {"kss": meta}
        if cell.status in FAILED:
            metadata["tags"] = [RAISES_TAG]
        out.append(
            {
                "cell_type": "code",
                "id": cell.id[:64],
                "execution_count": cell.execution_count,
                "metadata": metadata,
                "outputs": cell.outputs,
                "source": cell.source,
            }
        )
    if setup and kernel is not None:
        out.insert(0, setup_cell())
    kss: dict[str, Any] = {"user": user, "exported": time.time()}
    if files is not None:
        kss["files"] = files
    return {
        "cells": out,
        "metadata": {
            "kernelspec": KERNELSPEC,
            "language_info": {"name": "python"},
            "kss": kss,
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def build_notebook(
    cells: list[CellRecord],
    user: str,
    since_restart: bool = False,
    setup: bool = False,
    files: list[dict[str, Any]] | None = None,
) -> NotebookNode:
    return nbformat.from_dict(notebook_dict(cells, user, since_restart, setup, files))


class BadNotebook(ValueError):
    """A notebook sent to be run again that is not a valid nbformat 4 notebook."""

    code = "bad_notebook"


@dataclass(frozen=True)
class CodeCell:
    """One code cell of a notebook to run again: its place among the notebook's cells."""

    index: int
    id: str
    source: str
    tags: frozenset[str]

    @property
    def setup(self) -> bool:
        return SETUP_TAG in self.tags

    @property
    def may_fail(self) -> bool:
        return RAISES_TAG in self.tags


def read_code_cells(raw: bytes) -> list[CodeCell]:
    """The code cells of a notebook (JSON bytes), in order, once nbformat validated it."""
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except UnicodeDecodeError:
        raise BadNotebook("the notebook is not UTF-8 text") from None
    except Exception as exc:  # nbformat raises several kinds for a bad notebook
        raise BadNotebook(f"not a valid Jupyter notebook: {str(exc)[:300]}") from None
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags") or []
        found.append(
            CodeCell(
                index,
                str(cell.get("id") or index),
                cell.source,
                frozenset(t for t in tags if isinstance(t, str)),
            )
        )
    return found


def dumps(nb: dict[str, Any]) -> str:
    return json.dumps(nb, ensure_ascii=False, indent=1) + "\n"
