"""Transcript cells -> an nbformat v4 notebook (pure; nbformat is used only here)."""

from __future__ import annotations

import json
import time
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from .store.base import CellRecord

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
RESTART_NOTE = (
    "*Kernel restarted here ({why}): variables and imports from the cells above are no "
    "longer in memory.*"
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


def build_notebook(cells: list[CellRecord], user: str, since_restart: bool = False) -> NotebookNode:
    """One code cell per execution, markdown notes in place, a marker at each kernel change."""
    if since_restart:
        cells = current_kernel_cells(cells)
    nb = new_notebook(
        metadata={
            "kernelspec": KERNELSPEC,
            "language_info": {"name": "python"},
            "kss": {"user": user, "exported": time.time()},
        }
    )
    kernel = None
    for cell in cells:
        if cell.kind == "markdown":
            nb.cells.append(
                new_markdown_cell(cell.source, metadata={"kss": {"created": cell.created}})
            )
            continue
        kid = cell.metadata.get("kernel_id")
        if kid and kernel is not None and kid != kernel:
            nb.cells.append(new_markdown_cell(RESTART_NOTE.format(why=_restart_reason(cell))))
        kernel = kid or kernel
        meta = {k: v for k, v in cell.metadata.items() if k != "kernel_id"}
        meta["status"] = cell.status
        nb.cells.append(
            new_code_cell(
                cell.source,
                execution_count=cell.execution_count,
                outputs=[nbformat.from_dict(_clean(o)) for o in cell.outputs],
                metadata={"kss": meta},
            )
        )
    return nb


def _clean(output: dict[str, Any]) -> dict[str, Any]:
    kind = output.get("output_type")
    if kind == "execute_result" and output.get("execution_count") is None:
        return {**output, "execution_count": None}
    return output


def dumps(nb: NotebookNode) -> str:
    return json.dumps(nb, ensure_ascii=False, indent=1) + "\n"
