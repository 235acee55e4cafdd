"""The documentation stays in step with the code, and the example notebooks stay valid."""

import re
from pathlib import Path

import nbformat
import pytest

from server.app import route_table
from server.config import OPTIONS, env_name

ROOT = Path(__file__).resolve().parent.parent


def test_every_route_is_in_the_api_reference():
    api = (ROOT / "docs" / "api.md").read_text()
    for template, _ in route_table():
        assert re.search(rf"[` ]{re.escape(template)}(?![\w/{{])", api), f"{template} not in api.md"


def test_every_option_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in OPTIONS:
        flag = "--" + name.replace("_", "-")
        assert f"`{flag}" in readme, f"{flag} missing from README.md"
        assert f"`{env_name(name)}`" in readme, f"{env_name(name)} missing from README.md"
    assert "make run" in readme and "make test" in readme


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_example_notebooks_are_valid_and_show_real_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs for c in code), "every code cell has its outputs"
    kinds = {o.output_type for c in code for o in c.outputs}
    assert {"execute_result", "display_data", "stream"} <= kinds
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert any(c.cell_type == "markdown" for c in nb.cells)


def test_there_is_an_example_notebook():
    assert list((ROOT / "notebooks").glob("*.ipynb"))
