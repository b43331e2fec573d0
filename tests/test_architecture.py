"""The package's layers import downward only: no import cycle, no library module on the demo.

Imports are read from the source (module level and inside functions alike), not executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "lossplug"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _owner(name: str) -> str:
    """The lossplug module an imported name lives in (a package for a name it exports)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lossplug"):
            found.add(_owner(node.module))
            found |= {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
        elif isinstance(node, ast.Import):
            found |= {_owner(a.name) for a in node.names if a.name.startswith("lossplug")}
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in GRAPH[node]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_no_import_cycle_between_modules():
    cycles = [
        (name, dep)
        for name, deps in GRAPH.items()
        for dep in deps
        # a package importing its own submodules is how it exports them, not a cycle
        if not dep.startswith(name + ".") and _reaches(dep, name) and not name.startswith(dep + ".")
    ]
    assert cycles == []


def test_the_library_never_imports_the_demo_app():
    library = {name for name in GRAPH if not name.startswith("lossplug.demo")}
    assert {
        name for name in library if any(d.startswith("lossplug.demo") for d in GRAPH[name])
    } == set()


def test_the_losses_never_import_lightning():
    for name, path in MODULES.items():
        if name.startswith(("lossplug.functional", "lossplug.losses", "lossplug.composite")):
            assert "lightning" not in path.read_text(), name
