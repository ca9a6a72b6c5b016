"""The tiny study's `dvc repro` end to end, then DVC's and MLflow's views of the run.

The run is the session's one run of the README's first command (tests/conftest.py `readme_project`:
a committed copy of the repository, the tiny profile, `python` and `dvc` from this environment), shared
with the README's other commands (tests/e2e/test_readme_commands.py). Slow: `.ci/run` runs this file
after the default suite, before the README's commands (whose ablation commits to the project).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ingredients.config import load_params
from tests.e2e.project import PACKAGES, ROOT, dvc, env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

_env, _dvc = env, dvc


@pytest.fixture
def project(readme_project) -> Path:
    """The session's run of the README's first command (tests/conftest.py `readme_project`)."""
    return readme_project


def _evaluated(project: Path) -> list[str]:
    """The methods the evaluation scores: the sampled ones and the oracle and VAE round trip."""
    return sorted([*load_params(project / "params.yaml")["sample"]["methods"], "oracle", "vae_roundtrip"])


def test_dvc_repro_prints_no_warning(project):
    """An empty file listed as a dep made `dvc repro` print `WARNING: '…/__init__.py' is empty.` 60 times.
    DVC's own warnings start with `WARNING: `; the stages' log lines (`WARNING module: ...`, such as the
    untrained tiny CLIP's) are the study's, and stay."""
    log = (project / "first_command.log").read_text()
    assert "Running stage 'report'" in log
    assert not [line for line in log.splitlines() if line.startswith("WARNING: ")], log[-3000:]


def test_pipeline_produces_every_stage_output(project):
    metrics = json.loads((project / "outputs/eval/metrics.json").read_text())
    assert sorted(metrics) == _evaluated(project)
    # the oracle pastes the references into the frames: it must beat the text-only baseline
    assert metrics["oracle"]["face_sim/dlib"] > metrics["no_identity"]["face_sim/dlib"] + 0.5
    assert (project / "outputs/report/index.html").is_file()
    assert (project / "models/stage2/model/model_index.json").is_file()
    steps = load_params(project / "params.yaml")["train"]["stage2"]["steps"]
    assert (project / "models/stage2/train_log.csv").read_text().count("\n") == 1 + steps  # header + a row a step
    cases = (project / "data/benchmark/benchmark.jsonl").read_text().splitlines()
    assert len(list((project / "outputs/samples/ours").glob("*.mp4"))) == len(cases) > 0


def test_mlflow_store_holds_one_run_per_stage_and_method(project):
    con = sqlite3.connect(project / "mlflow.db")
    rows = con.execute(
        "select r.name, t.value from runs r join tags t on t.run_uuid = r.run_uuid where t.key = 'stage'"
    ).fetchall()
    stages = {stage for _, stage in rows}
    # every DVC stage logs a run (training runs are tagged with their train.* section name)
    expected = {name.removeprefix("train_") for name in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]}
    assert stages == expected, stages ^ expected
    evaluated = sorted(name for name, stage in rows if stage == "evaluate")
    assert evaluated == _evaluated(project)


def test_second_repro_runs_nothing(project):
    start = time.monotonic()
    run = _dvc(project, "repro")
    elapsed = time.monotonic() - start
    assert run.returncode == 0 and "Running stage" not in run.stdout, run.stdout
    assert elapsed < 10, f"a no-op dvc repro took {elapsed:.1f}s"


def _stages_run(output: str) -> list[str]:
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '"))


def test_exp_run_of_a_sampling_param_reruns_only_the_stages_that_read_it(project, tmp_path):
    """`dvc exp run -S sample.steps=...` in a committed copy of the project: sampling, what reads the
    samples (evaluation, report) and the plan, whose sampling cost counts the steps."""
    work = tmp_path / "project"
    shutil.copytree(project, work, symlinks=True)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "add", "-A"], cwd=work, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-q", "-m", "tiny run"], cwd=work, check=True, capture_output=True)
    steps = load_params(work / "params.yaml")["sample"]["steps"]
    run = _dvc(work, "exp", "run", "-n", "more_steps", "-S", f"sample.steps={steps + 1}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert _stages_run(run.stdout) == ["evaluate", "plan", "report", "sample"], run.stdout
    con = sqlite3.connect(work / "mlflow.db")
    tagged = {stage for stage, exp in con.execute(
        "select s.value, e.value from tags s join tags e on s.run_uuid = e.run_uuid "
        "where s.key = 'stage' and e.key = 'dvc_experiment'") if exp == "more_steps"}
    assert tagged == {"sample", "evaluate", "plan", "report"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (scripts/setup.sh installs it)")
def test_mlflow_ui_compare_view_shows_the_methods(project, tmp_path):
    """Start the documented MLflow UI (`python -m study.mlflow_stage ui`) on the run's store, open the
    compare view headless, stop it by PID."""
    import urllib.request

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "study.mlflow_stage", "ui", "--params", "params.yaml", "--port", str(port)],
        cwd=project, env={**_env(project), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not answer within 60 s")
        con = sqlite3.connect(project / "mlflow.db")
        exp_id, run_ids = None, []
        for run_id, exp, stage in con.execute(
            "select r.run_uuid, r.experiment_id, t.value from runs r join tags t on t.run_uuid = r.run_uuid where t.key = 'stage'"
        ):
            if stage == "evaluate":
                exp_id = exp
                run_ids.append(run_id)
        runs = json.dumps(run_ids).replace(" ", "")
        url = f"{base}/#/compare-runs?runs={runs}&experiments=[\"{exp_id}\"]"
        shot = tmp_path / "compare.png"
        dom = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
             f"--screenshot={shot}", "--window-size=1400,900", "--dump-dom", url],
            capture_output=True, text=True, timeout=180,
        ).stdout
        for method in ("ours", "oracle", "no_identity"):
            assert method in dom, f"{method} not on the compare page"
        assert "face_sim/dlib" in dom
        assert shot.is_file() and shot.stat().st_size > 10_000
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _status_changed(project: Path) -> set[str]:
    run = _dvc(project, "status", "--json")
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout or "{}"))


def test_editing_a_file_reruns_exactly_the_stages_that_import_it(project):
    """dvc.yaml's code deps are the import closures: a file no stage imports changes nothing; a file
    some stages import makes exactly those stages stale."""
    from tests.test_dvc_deps import needed, stages

    wanted = {name: set(needed(stage, project)) for name, stage in stages(project).items()}
    used = set().union(*wanted.values())
    unused = sorted(str(p.relative_to(project)) for pkg in PACKAGES
                    for p in (project / pkg).rglob("*.py") if str(p.relative_to(project)) not in used)
    assert unused, "every file is imported by some stage: pick another probe"
    for path, expected in ((unused[0], set()), ("ingredients/compute.py", {n for n, w in wanted.items() if "ingredients/compute.py" in w})):
        original = (project / path).read_text()
        try:
            (project / path).write_text(original + "\n# edited\n")
            assert _status_changed(project) == expected, path
        finally:
            (project / path).write_text(original)
    assert _status_changed(project) == set()
