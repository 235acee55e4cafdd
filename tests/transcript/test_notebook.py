"""Transcript cells -> notebook, as a pure function (no server, no kernel)."""

import nbformat
import pytest

from transcript.notebook import (
    BadNotebook,
    build_notebook,
    current_kernel_cells,
    dumps,
    read_code_cells,
)
from transcript.store.base import CellRecord


def code(cid, source, kernel, count, outputs=(), restarted=False, status="ok"):
    return CellRecord(
        "t",
        "u",
        cid,
        "code",
        source,
        1.0,
        status,
        count,
        list(outputs),
        {"kernel_id": kernel, "kernel_restarted": restarted, "started": 1.0, "duration_ms": 2.0},
    )


def note(cid, text):
    return CellRecord("t", "u", cid, "markdown", text, 1.0)


CELLS = [
    note("n0", "# Question"),
    code("c1", "x = 1", "k1", 1),
    code("c2", "print(x)", "k1", 2, [{"output_type": "stream", "name": "stdout", "text": "1\n"}]),
    code(
        "c3",
        "plot()",
        "k1",
        3,
        [
            {
                "output_type": "display_data",
                "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<F>"},
                "metadata": {},
            }
        ],
    ),
    code(
        "c4",
        "1/0",
        "k1",
        4,
        [
            {
                "output_type": "error",
                "ename": "ZeroDivisionError",
                "evalue": "division by zero",
                "traceback": ["tb"],
            }
        ],
        status="error",
    ),
    note("n1", "After the restart:"),
    code(
        "c5",
        "x",
        "k2",
        1,
        [
            {
                "output_type": "execute_result",
                "execution_count": 1,
                "data": {"text/plain": "NameError"},
                "metadata": {},
            }
        ],
        restarted=True,
    ),
]


def test_every_cell_in_order_with_outputs_and_a_restart_marker():
    nb = build_notebook(CELLS, "u")
    nbformat.validate(nb)
    kinds = [(c.cell_type, c.source[:12]) for c in nb.cells]
    assert kinds == [
        ("markdown", "# Question"),
        ("code", "x = 1"),
        ("code", "print(x)"),
        ("code", "plot()"),
        ("code", "1/0"),
        ("markdown", "After the re"),
        ("markdown", "*Kernel rest"),
        ("code", "x"),
    ]
    assert nb.cells[2].outputs[0].text == "1\n"
    assert nb.cells[3].outputs[0].data["image/png"] == "iVBORw0KGgo="
    assert nb.cells[4].outputs[0].ename == "ZeroDivisionError"
    assert nb.cells[4].metadata["kss"]["status"] == "error"
    assert nb.cells[1].execution_count == 1 and nb.cells[7].execution_count == 1
    assert "restart" in nb.cells[6].source
    assert nb.metadata.kernelspec.name == "python3"
    nbformat.validate(nbformat.reads(dumps(nb), as_version=4))


def test_since_restart_keeps_the_current_kernel_and_its_leading_notes():
    cells = current_kernel_cells(CELLS)
    assert [c.id for c in cells] == ["n1", "c5"]
    nb = build_notebook(CELLS, "u", since_restart=True)
    nbformat.validate(nb)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code"]


def test_empty_session_is_a_valid_empty_notebook():
    nb = build_notebook([], "u")
    nbformat.validate(nb)
    assert nb.cells == []
    assert build_notebook([], "u", since_restart=True).cells == []


def test_running_and_interrupted_cells_are_kept_with_their_status():
    cells = [
        code(
            "c1",
            "long()",
            "k1",
            None,
            status="interrupted",
            outputs=[{"output_type": "stream", "name": "stdout", "text": "partial\n"}],
        )
    ]
    nb = build_notebook(cells, "u")
    nbformat.validate(nb)
    assert nb.cells[0].metadata["kss"]["status"] == "interrupted"
    assert nb.cells[0].outputs[0].text == "partial\n"


def test_a_runnable_notebook_starts_with_the_setup_cell_and_tags_failed_cells():
    files = [{"name": "sales.csv", "size": 3, "sha256": "ab" * 32}]
    nb = build_notebook(CELLS, "u", setup=True, files=files)
    nbformat.validate(nb)
    setup = nb.cells[0]
    assert setup.cell_type == "code" and setup.metadata.tags == ["kss-setup"]
    assert setup.metadata.jupyter.source_hidden is True and setup.metadata.collapsed is True
    namespace: dict = {}
    exec(setup.source, namespace)  # defines exactly load_file and FILES, as kernels have them
    assert {n for n in namespace if n != "__builtins__"} == {"load_file", "FILES"}
    failed = [c for c in nb.cells if "raises-exception" in c.metadata.get("tags", [])]
    assert [c.source for c in failed] == ["1/0"]
    assert nb.metadata.kss.files == files
    assert build_notebook([note("n", "only a note")], "u", setup=True).cells[0].cell_type == (
        "markdown"
    )  # nothing to run: no setup cell


def test_a_restore_from_hibernation_is_marked_with_what_came_back():
    restored = code("c6", "df.head()", "k3", 1, restarted=True)
    restored.metadata["restored"] = {
        "restored": ["df", "model"],
        "lost": [{"name": "fh", "why": "open file"}],
        "failed": False,
    }
    failed = code("c7", "1", "k4", 1, restarted=True)
    failed.metadata["restored"] = {"restored": [], "lost": [], "failed": True}
    nb = build_notebook([*CELLS, restored, failed], "u")
    nbformat.validate(nb)
    markers = [c.source for c in nb.cells if c.cell_type == "markdown"][-2:]
    assert "restored from hibernation (`df`, `model`)" in markers[0]
    assert "Lost: `fh` (open file)" in markers[0]
    assert "restoring its variables failed" in markers[1]


def test_code_cells_of_a_notebook_to_run_again():
    nb = build_notebook(CELLS, "u", setup=True)
    cells = read_code_cells(dumps(nb).encode())
    assert [c.source for c in cells][:2] == [nb.cells[0].source, "x = 1"]
    assert cells[0].setup and not cells[1].setup
    assert [c.may_fail for c in cells] == [False, False, False, False, True, False]
    assert [c.index for c in cells] == [0, 2, 3, 4, 5, 8]
    for bad in (b"{", b"\xff", b'{"cells": 3}', b"[]"):
        with pytest.raises(BadNotebook):
            read_code_cells(bad)
