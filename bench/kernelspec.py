"""The one kernelspec Kernel Gateway and the ZMQ floor both launch: the same kernel as ours."""

from __future__ import annotations

import json
from pathlib import Path

from bench.config import REPO

KERNEL_NAME = "bench-python3"


def kernel_argv(python: str) -> list[str]:
    """ipykernel from the kernel venv, history off as our server runs it."""
    return [
        python,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
        "--HistoryManager.enabled=False",
    ]


def kernel_env() -> dict[str, str]:
    return {
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # The font cache the kernel venv built at install time, so no system pays for it.
        "MPLCONFIGDIR": str(REPO / ".kernel-venv" / "mplconfig"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
    }


def write_kernelspec(jupyter_path: Path, python: str) -> Path:
    """Write `<jupyter_path>/kernels/bench-python3/kernel.json`; return the kernels dir."""
    kernels = jupyter_path / "kernels"
    spec_dir = kernels / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": kernel_argv(python),
        "display_name": "Python 3 (bench, kernel venv)",
        "language": "python",
        "env": kernel_env(),
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=2))
    return kernels
