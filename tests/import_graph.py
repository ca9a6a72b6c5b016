"""The project's import graph, read from the source with `ast` (nothing is imported): shared by the
floors test and the DVC deps test."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingredients", "eval", "study", "experiments", "instruments")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} of every project module."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path], dynamic: bool = False) -> set[str]:
    """Project modules that `name` imports (absolute or relative, at any depth of the file); with
    `dynamic`, also modules it names in a string (loaded by `importlib.import_module`, as the metric
    registry does: a dependency of the stage, though not an import edge of the floors)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import submodule` depends on the submodule; `from pkg import name` on pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif dynamic and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.split(":")[0] in modules:
            # a module named in a string, alone (the metric registry) or as "module:Class" (the face backends)
            targets = [node.value.split(":")[0]]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, dynamic: bool = False) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules, dynamic) for name, path in modules.items()}


def closure(start: list[str], graph: dict[str, set[str]]) -> set[str]:
    """Every module reachable from `start`, with the packages above each (Python imports them too)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen or name not in graph:
            continue
        seen.add(name)
        todo.extend(graph[name])
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return seen
