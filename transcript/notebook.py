"""Transcript cells -> an nbformat v4 notebook (pure; nbformat is used only here).

The notebook is built as plain dicts in the nbformat 4.5 layout: nbformat's cell factories
validate every cell as they go, about a second for a 1,000-cell session. The tests validate
what this builds; `build_notebook` wraps it in a `NotebookNode` for callers that want one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import nbformat
from nbformat import NotebookNode

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


def _markdown(cell_id: str, source: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": cell_id, "metadata": metadata, "source": source}


def notebook_dict(
    cells: list[CellRecord], user: str, since_restart: bool = False
) -> dict[str, Any]:
    """One code cell per execution, markdown notes in place, a marker at each kernel change."""
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
            why = _restart_reason(cell)
            out.append(_markdown(f"restart-{len(out)}", RESTART_NOTE.format(why=why), {}))
        kernel = kid or kernel
        meta = {k: v for k, v in cell.metadata.items() if k != "kernel_id"}
        meta["status"] = cell.status
        out.append(
            {
                "cell_type": "code",
                "id": cell.id[:64],
                "execution_count": cell.execution_count,
                "metadata": {"kss": meta},
                "outputs": cell.outputs,
                "source": cell.source,
            }
        )
    return {
        "cells": out,
        "metadata": {
            "kernelspec": KERNELSPEC,
            "language_info": {"name": "python"},
            "kss": {"user": user, "exported": time.time()},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def build_notebook(cells: list[CellRecord], user: str, since_restart: bool = False) -> NotebookNode:
    return nbformat.from_dict(notebook_dict(cells, user, since_restart))


def dumps(nb: dict[str, Any]) -> str:
    return json.dumps(nb, ensure_ascii=False, indent=1) + "\n"
