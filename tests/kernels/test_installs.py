"""`%pip install` lines are taken out of the code (the server installs); other pip commands
are refused with a message."""

import pytest

from kernels.installs import PipCommandRefused, split_pip


def test_pip_install_lines_become_requirements_and_blank_lines():
    code = (
        "%pip install plotly 'networkx>=3'\nimport plotly\n!pip install -q tabulate  # quiet\nx = 1"
    )
    rest, wanted = split_pip(code)
    assert wanted == ["plotly", "networkx>=3", "tabulate"]
    assert rest == "\nimport plotly\n\nx = 1"


def test_code_without_pip_is_left_alone():
    code = "print('pip install x')\nif y:\n    pass"
    assert split_pip(code) == (code, [])


@pytest.mark.parametrize("line", ["%pip list", "!pip uninstall -y pandas", "%pip install", "!pip3"])
def test_other_pip_commands_are_refused(line):
    with pytest.raises(PipCommandRefused, match="pip"):
        split_pip(f"x = 1\n{line}\n")
