"""Each DVC stage's code `deps` are exactly the project files its command imports: every one is
listed (`dvc repro` never reports "up to date" over stale results) and nothing else is (editing a file
no stage imports reruns nothing). `python -m tests.test_dvc_deps` rewrites dvc.yaml's code deps from
the import graph, keeping its comments and its data deps.

The import closure is computed from the source (`tests.import_graph`, nothing is executed), starting
at every `python -m MODULE` (or `-m MODULE` after a launcher) in the stage's `cmd`.
"""

from __future__ import annotations

import functools
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
    modules, graph = _graph(root)
    deps = [Path(d) for d in stage.get("deps", []) if "${" not in str(d)]
    needed = sorted(modules[m].relative_to(root) for m in closure(stage_modules(stage["cmd"]), graph))
    return [str(path) for path in needed if not any(path == d or d in path.parents for d in deps)]


CODE = ("ingredients", "eval", "study", "experiments", "instruments")


@functools.lru_cache(maxsize=4)
def _graph(root: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    return module_files(root), import_graph(root, dynamic=True)


def needed(stage: dict, root: Path = ROOT) -> list[str]:
    """The project files the stage's command imports (or names in a string), sorted."""
    modules, graph = _graph(root)
    return sorted(str(modules[m].relative_to(root)) for m in closure(stage_modules(stage["cmd"]), graph))


def extra(stage: dict, root: Path = ROOT) -> list[str]:
    """Code deps the stage does not import: a folder of code, or a file outside its import closure."""
    wanted = set(needed(stage, root))
    code = [str(d) for d in stage.get("deps", []) if str(d).split("/")[0] in CODE]
    return [d for d in code if d not in wanted]


def stages(root: Path = ROOT) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def empty_deps(root: Path = ROOT) -> list[str]:
    """Code deps that are empty files: `dvc repro` prints `WARNING: '...' is empty.` once per stage for
    each, which reads as something broken. Such a file (an empty `__init__.py`) stays a dep, as its
    import is real, and gets a docstring instead."""
    return sorted({d for stage in stages(root).values() for d in stage.get("deps", [])
                   if str(d).split("/")[0] in CODE and (root / d).is_file() and (root / d).stat().st_size == 0})


def write_exact_deps(root: Path = ROOT) -> None:
    """Rewrite each stage's code deps in dvc.yaml as its import closure, data deps kept after them."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.width = 4096
    path = root / "dvc.yaml"
    doc = rt.load(path.read_text())
    for stage in doc["stages"].values():
        data = [d for d in stage.get("deps", []) if str(d).split("/")[0] not in CODE]
        deps = stage["deps"]
        del deps[:]
        deps.extend([*needed(stage, root), *data])
    with path.open("w") as f:
        rt.dump(doc, f)
    if empty_deps(root):
        raise SystemExit(f"dvc.yaml rewritten, but these deps are empty files, which `dvc repro` warns about: "
                         f"{empty_deps(root)}; give each a docstring saying what the package holds")


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_cover_its_imports(name):
    stage = stages()[name]
    assert stage_modules(stage["cmd"]), f"stage {name} runs no python module"
    assert uncovered(stage) == [], f"dvc.yaml stage {name!r}: add these (or their package) to deps"


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_hold_nothing_it_does_not_import(name):
    assert extra(stages()[name]) == [], (f"dvc.yaml stage {name!r}: deps it does not import "
                                         "(run `python -m tests.test_dvc_deps` to rewrite them)")


def test_no_code_dep_is_an_empty_file():
    """`dvc repro` warns `'ingredients/__init__.py' is empty.` per stage per empty dep (60 lines once)."""
    assert empty_deps() == [], "give these files a docstring (dvc repro warns about empty deps)"


def test_the_check_finds_an_extra_dep():
    """A folder of code (it holds files the stage does not import) and a file it does not import."""
    stage = {"cmd": "python -m ingredients.data.curate --raw x",
             "deps": ["ingredients/data/curate.py", "ingredients/model_folder", "instruments/rehearsal.py", "data/raw"]}
    assert extra(stage) == ["ingredients/model_folder", "instruments/rehearsal.py"]


def test_the_check_finds_a_missing_dep():
    """A stage that imports the face stack but lists only its own file is caught."""
    stage = {"cmd": "python -m ingredients.data.curate --raw x", "deps": ["ingredients/data"]}
    missing = uncovered(stage)
    assert "ingredients/faces/registry.py" in missing and "ingredients/config.py" in missing
    assert not any(m.startswith("ingredients/data/") for m in missing)


if __name__ == "__main__":
    write_exact_deps()
