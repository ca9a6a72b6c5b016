"""The README's first command and the commands that follow it, verbatim, in a committed copy of the
repository (a fresh clone's layout) whose `.venv` is this environment: `scripts/setup.sh` finds it up
to date, as on a machine where it already ran, and the tiny `dvc repro` runs in full. Then, on that run,
one retraining ablation through the README's queue command and the comparison command (`.ci/run` runs
this file after the default suite).

Slow: the whole tiny study, about 7 minutes on 2 idle cores, and one ablation, about 3 more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.project import commit, comparison_ui_serves, mlflow_stages_by_experiment, shell
from tests.e2e.test_ablation_queue import COMPARE, QUEUE, SHOW, SHOW_MD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

SETUP = "bash scripts/setup.sh && source .venv/bin/activate"  # README, "Run the real study" step 0
ACTIVATE = "source .venv/bin/activate"  # experiments/README.md
GENERATE = 'ingredients generate --photo a.jpg --photo b.jpg --prompt "two people talking in a park" --out video.mp4 --model models/stage2/model'  # noqa: E501
AGAIN = "ingredients generate --from-json video.json --out again.mp4"
METRICS, PLOTS = "dvc metrics show", "dvc plots show"
PHOTO_CASES = "python -m instruments.photo_cases --out DIR"  # eval/README.md


@pytest.fixture
def project(readme_project) -> Path:
    """The session's run of the README's first command (tests/conftest.py `readme_project`)."""
    return readme_project


def test_the_first_command_runs_the_tiny_study_to_the_report(project):
    assert (project / "outputs/report/index.html").is_file()
    metrics = json.loads((project / "outputs/eval/metrics.json").read_text())
    assert {"ours", "oracle", "no_identity"} <= set(metrics)
    for command in (SETUP, ACTIVATE):
        assert shell(project, command).returncode == 0


KEPT = "no_routing_loss"  # retrains stage 2 (train.stage2.routing.weight), then samples and evaluates anew


def test_one_retraining_ablation_by_the_queue_command_then_the_comparison(project):
    """README "Ablations" and step 5, verbatim, on the run above: the copy's experiments/ keeps one file,
    no_routing_loss.yaml, so the documented `experiments/*.yaml` queues one experiment (all nine, about an
    hour, run in tests/e2e/test_ablation_queue.py, slow). Its MLflow runs land in the copy's own
    mlflow.db although DVC ran it in a temporary copy; `dvc exp show` lists it; the comparison
    command's UI serves its runs."""
    for path in (project / "experiments").glob("*.yaml"):
        if path.stem != KEPT:
            path.unlink()
    commit(project, "the README's first command, run; one ablation kept for the queue")
    run = shell(project, QUEUE)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    tagged = mlflow_stages_by_experiment(project)
    assert {"stage2", "sample", "evaluate"} <= tagged.get(KEPT, set()), tagged
    assert "stage1" not in tagged[KEPT] and "prepare" not in tagged[KEPT]  # rerun from where its key enters
    assert not list((project / ".dvc" / "tmp" / "exps").glob("tmp*/mlflow.db"))
    show = shell(project, SHOW)
    assert show.returncode == 0 and KEPT in show.stdout, show.stdout[-3000:] + show.stderr[-3000:]
    md = shell(project, SHOW_MD)
    assert md.returncode == 0 and KEPT in md.stdout and "|" in md.stdout, md.stdout[-3000:]
    comparison_ui_serves(project, COMPARE, [KEPT])


def test_dvc_shows_the_metrics_and_the_plots(project):
    metrics = shell(project, METRICS)
    assert metrics.returncode == 0 and "face_sim/dlib" in metrics.stdout.replace(" ", ""), metrics.stdout
    plots = shell(project, PLOTS)
    assert plots.returncode == 0, plots.stderr
    assert (project / "dvc_plots" / "index.html").is_file()


def test_generate_with_the_trained_tiny_model_and_again_from_its_json(project):
    from PIL import Image

    from tests.test_cli import _photos

    for photo, name in zip(_photos(), ("a.jpg", "b.jpg")):  # real photos shipped in packages, as JPEG
        Image.open(photo).convert("RGB").save(project / name)
    run = shell(project, f"{ACTIVATE} && {GENERATE}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for name in ("video.mp4", "video.strip.png", "video.json"):
        assert (project / name).is_file(), name
    again = shell(project, f"{ACTIVATE} && {AGAIN}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (project / "again.mp4").read_bytes() == (project / "video.mp4").read_bytes()


def test_the_photo_cases_fixture_builder(project):
    run = shell(project, PHOTO_CASES.replace("DIR", "photo_cases"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert list((project / "photo_cases").rglob("*.jsonl"))
