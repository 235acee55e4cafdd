"""The shape of the code: imports go one way, and no module is part of an import cycle.

Every import counts, also one under `TYPE_CHECKING` or inside a function: a cycle there is
still a cycle for a reader. The layers, from the top: the web layer (`server`), the
transcript (`transcript`), the kernel layer (`kernels`), package installs (`packages`), the user's
file area (`files`). A package may import only packages below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["server", "transcript", "kernels", "packages", "files"]  # top first


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "startup" in path.parts:  # run inside kernels, never imported
                continue
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `name` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # `from pkg import sub` depends on the submodule; `from mod import name` on mod
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
            candidates = subs if len(subs) == len(node.names) else [module, *subs]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


GRAPH = {name: imports_of(name, path, set(modules())) for name, path in modules().items()}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_the_layers_only(module):
    upward = sorted(t for t in GRAPH[module] if layer(t) < layer(module))
    assert not upward, f"{module} imports from a layer above it: {upward}"


def test_no_module_is_in_an_import_cycle():
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in GRAPH:
        if start in index:
            continue
        work = [(start, iter(sorted(GRAPH[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(GRAPH[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    assert not cycles, f"import cycles: {cycles}"


def test_the_check_sees_imports_under_type_checking_and_in_functions(tmp_path):
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
        "def f():\n    import kernels.pool\n"
    )
    path = tmp_path / "a.py"
    path.write_text(source)
    found = imports_of("kernels.a", path, {"kernels.a", "kernels.b", "kernels.pool"})
    assert found == {"kernels.b", "kernels.pool"}
