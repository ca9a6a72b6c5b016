"""A temporary DVC project made of this repository's packages, dvc.yaml and a merged params.yaml, with
`python` resolving to this environment's interpreter: what the end-to-end tests run `dvc repro` in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ingredients.config import load_merged

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ingredients", "eval", "study", "experiments", "instruments")


def env(project: Path) -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out['PATH']}"
    out["MLFLOW_DISABLE_TELEMETRY"] = "true"
    out["DVC_NO_ANALYTICS"] = "1"
    out["PYTHONPATH"] = str(project)
    return out


def record_stage_commands(output: str, cwd: Path) -> None:
    """Add each stage command DVC printed as run (`Running stage 'x':` then `> CMD`) to the executed-command
    record (tests/command_record.py), as `sh -c CMD` with `"how": "dvc stage"`."""
    from tests import command_record

    lines = output.splitlines()
    for before, line in zip(lines, lines[1:]):
        if before.startswith("Running stage '") and line.startswith("> "):
            command_record.record(["sh", "-c", line[2:]], how="dvc stage", cwd=cwd)


def dvc(project: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    run = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env(project),
                         capture_output=True, text=True, timeout=timeout)
    record_stage_commands(run.stdout, project)
    return run


def make_project(project: Path, overrides: tuple[Path, ...], extra: dict | None = None) -> Path:
    """Copy the packages, configs/ and dvc.yaml into `project`, write params.yaml (params.yaml + `overrides` +
    `extra`, merged in order), `git init` and `dvc init` there."""
    for name in (*PACKAGES, "configs"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    params = load_merged(ROOT / "params.yaml", overrides)
    if extra:
        from ingredients.config import deep_merge

        params = deep_merge(params, extra)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert dvc(project, "init", "-q").returncode == 0
    return project


def make_repo_copy(project: Path, params: dict | None = None) -> Path:
    """A committed git + DVC repository like a fresh clone: the packages, dvc.yaml, profiles/,
    experiments/ and params.yaml as they are in this repository (or `params`, for a test that must
    stay small), so the documented commands run verbatim in it."""
    for name in (*PACKAGES, "configs", "profiles", "scripts"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    if params is not None:
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(project, "init", "-q")
    assert dvc(project, "init", "-q").returncode == 0
    commit(project, "a fresh clone")
    return project


def git(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
                          cwd=project, check=True, capture_output=True, text=True)


def commit(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)


def shell(project: Path, command: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    """A documented command, verbatim, through bash in `project` (`python`, `dvc` from this environment)."""
    run = subprocess.run(["bash", "-c", command], cwd=project, env=env(project), capture_output=True, text=True,
                         timeout=timeout)
    record_stage_commands(run.stdout, project)
    return run


def mlflow_stages_by_experiment(project: Path) -> dict[str, set[str]]:
    """{dvc_experiment tag: the `stage` tags of its runs} in the project's own mlflow.db."""
    import sqlite3

    con = sqlite3.connect(project / "mlflow.db")
    tagged: dict[str, set[str]] = {}
    for stage, exp in con.execute("select s.value, e.value from tags s join tags e on s.run_uuid = e.run_uuid "
                                  "where s.key = 'stage' and e.key = 'dvc_experiment'"):
        tagged.setdefault(exp, set()).add(stage)
    return tagged


def comparison_ui_serves(project: Path, command: str, names: list[str], timeout: float = 120) -> None:
    """Start the documented comparison command (`dvc exp show --only-changed && python -m
    study.mlflow_stage ui`, verbatim) in `project`; once its UI answers on 127.0.0.1:5000, assert its runs
    include an MLflow run named after or tagged with each of `names`; stop it by its process group."""
    import json as _json
    import signal
    import time
    import urllib.request

    server = subprocess.Popen(["bash", "-c", command], cwd=project, env={**env(project), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                runs = urllib.request.urlopen(urllib.request.Request(
                    "http://127.0.0.1:5000/api/2.0/mlflow/runs/search",
                    data=_json.dumps({"experiment_ids": ["1"], "max_results": 1000}).encode(),
                    headers={"Content-Type": "application/json"}), timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, "the command exited before the UI answered"
                assert time.monotonic() < deadline, f"the UI did not answer within {timeout:.0f} s"
                time.sleep(1)
        for name in names:
            assert name.encode() in runs, name
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
