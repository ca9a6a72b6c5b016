"""Each DVC stage's `deps` cover every project file its command imports, so editing a file reruns
exactly the stages that use it and `dvc repro` never reports "up to date" over stale results.

The import closure is computed from the source (`tests.import_graph`, nothing is executed), starting
at every `python -m MODULE` (or `-m MODULE` after a launcher) in the stage's `cmd`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.import_graph import ROOT, closure, import_graph, module_files

MODULE_ARG = re.compile(r"(?:^|\s)-m\s+([A-Za-z_][\w.]*)")


def stage_modules(cmd: str | list[str]) -> list[str]:
    """The modules a stage's command runs with `-m`."""
    text = " ".join(cmd) if isinstance(cmd, list) else cmd
    return MODULE_ARG.findall(text)


def uncovered(stage: dict, root: Path = ROOT) -> list[str]:
    """Project files the stage imports that none of its deps (file or folder) covers."""
    modules = module_files(root)
    graph = import_graph(root, dynamic=True)
    deps = [Path(d) for d in stage.get("deps", []) if "${" not in str(d)]
    needed = sorted(modules[m].relative_to(root) for m in closure(stage_modules(stage["cmd"]), graph))
    return [str(path) for path in needed if not any(path == d or d in path.parents for d in deps)]


def stages(root: Path = ROOT) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_cover_its_imports(name):
    stage = stages()[name]
    assert stage_modules(stage["cmd"]), f"stage {name} runs no python module"
    assert uncovered(stage) == [], f"dvc.yaml stage {name!r}: add these (or their package) to deps"


def test_the_check_finds_a_missing_dep():
    """A stage that imports the face stack but lists only its own file is caught."""
    stage = {"cmd": "python -m ingredients.data.curate --raw x", "deps": ["ingredients/data"]}
    missing = uncovered(stage)
    assert "ingredients/faces/registry.py" in missing and "ingredients/config.py" in missing
    assert not any(m.startswith("ingredients/data/") for m in missing)
