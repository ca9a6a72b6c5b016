"""The floors of the house (README, "Layout"), checked on the source with `ast` (nothing is imported):
no import circle among project modules, and no module imports from a floor above its own.

Floors, lowest first: the method's base (params loader, files, MLflow runs) < models and pipelines <
faces < data (manifest) < model folder < training (checkpoints) < sampling (samples), the plan and the
launcher of the GPU stages < `eval`
(metrics) < `study` (the code that sees every stage: params schema, MLflow step) < `experiments`
(the ablations) < `instruments` (what no stage runs:
measurements, the rehearsal tree, stand-in models, fixture builders). Imports inside functions count:
a lazy import is still a dependency.
"""

from __future__ import annotations

import pytest

from tests.import_graph import import_graph

FLOORS: tuple[tuple[str, ...], ...] = (
    ("ingredients", "ingredients.config", "ingredients.files", "ingredients.mlflow_run", "ingredients.compute"),
    ("ingredients.models", "ingredients.pipelines"),
    ("ingredients.faces",),
    ("ingredients.data",),
    ("ingredients.model_folder",),
    ("ingredients.training",),
    ("ingredients.sampling", "ingredients.plan", "ingredients.cli", "ingredients.launch", "ingredients.launch_ray",
     "ingredients.preflight"),
    ("eval",),
    ("study",),
    ("experiments",),
    ("instruments",),
)


def floor_of(module: str) -> int:
    """Index of the floor whose longest matching prefix names `module`."""
    best, best_len = -1, -1
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} is on no floor; add its package to FLOORS in {__file__}")
    return best


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})"
                  for a, deps in graph.items() for b in deps if floor_of(b) > floor_of(a))


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_nothing_imports_a_higher_floor():
    assert upward_imports(import_graph()) == []


def test_ingredients_imports_only_ingredients():
    graph = import_graph()
    bad = sorted(f"{a} -> {b}" for a, deps in graph.items() if a.startswith("ingredients")
                 for b in deps if not b.startswith("ingredients"))
    assert bad == []


def test_the_checks_catch_what_they_should(tmp_path):
    """The checker finds a circle and an upward import in a small made-up tree."""
    for rel, text in {
        "ingredients/__init__.py": "",
        "ingredients/config.py": "from ingredients.models import thing\n",
        "ingredients/models/__init__.py": "def thing():\n    from ingredients import config\n",
        "eval/__init__.py": "",
        "experiments/__init__.py": "",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    graph = import_graph(tmp_path)
    assert find_cycle(graph) == ["ingredients.config", "ingredients.models", "ingredients.config"]
    assert upward_imports(graph) == ["ingredients.config (floor 0) imports ingredients.models (floor 1)"]


@pytest.mark.parametrize("module", ["ingredients.files.atomic", "eval.metrics.face_sim", "study.params"])
def test_every_module_has_a_floor(module):
    assert floor_of(module) >= 0
