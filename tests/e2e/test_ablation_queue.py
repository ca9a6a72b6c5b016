"""The ablations and the MLflow comparison by their documented commands, verbatim, in a committed copy
of the repository (a fresh clone's layout): the README's `queue experiments/*.yaml --run`, then
`dvc exp show --only-changed`, then the runs in the repository's MLflow store.

The project's committed params are the tiny profile shrunk by `smaller_than_tiny.yaml` (the one
placeholder: the size), so that nine experiments, each retraining from where its parameter enters,
fit in a test. Slow: about 10-20 minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingredients.config import deep_merge, load_merged
from tests.e2e.project import ROOT, commit, comparison_ui_serves, dvc, make_repo_copy, mlflow_stages_by_experiment, shell

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

ABLATIONS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
QUEUE = "python -m experiments.ablations queue experiments/*.yaml --run"  # README, Ablations
SHOW = "dvc exp show --only-changed"
SHOW_MD = "dvc exp show --only-changed --md"  # experiments/README.md
COMPARE = "dvc exp show --only-changed && python -m study.mlflow_stage ui"  # README, step 5
LOGS = "dvc queue logs NAME"
RUN_ONE = "python -m experiments.ablations run experiments/no_routing_loss.yaml"  # experiments/README.md


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    params = load_merged(ROOT / "params.yaml", (ROOT / "tests/e2e/smaller_than_tiny.yaml",))
    params = deep_merge(params, {"curate": {"masker": "landmarks"}})  # box_masks must change something
    project = make_repo_copy(tmp_path_factory.mktemp("ablations"), params)
    run = dvc(project, "repro", timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    commit(project, "baseline: dvc repro")
    return project


def test_one_ablation_retrains_from_the_workspace(project):
    run = shell(project, RUN_ONE)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Running stage 'train_stage2'" in run.stdout  # no_routing_loss reruns router training
    assert json.loads((project / "outputs/eval/metrics.json").read_text())["ours"]
    shell(project, "git checkout -- params.yaml && dvc checkout -q")


def test_the_queue_runs_every_ablation_and_mlflow_holds_their_runs(project):
    run = shell(project, QUEUE)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    show = shell(project, SHOW)
    assert show.returncode == 0, show.stderr
    for name in ABLATIONS:
        assert name in show.stdout, (name, show.stdout)
    assert "face_sim/dlib" in show.stdout.replace("\n", "").replace(" ", "") or "metrics.json" in show.stdout
    tagged = mlflow_stages_by_experiment(project)
    for name in ABLATIONS:  # every ablation reran evaluation, at least, in a temporary copy DVC deleted
        assert "evaluate" in tagged.get(name, set()), (name, tagged)
    assert "stage2" in tagged["no_routing_loss"] and "prepare" in tagged["injection_every_2"]
    assert not list((project / ".dvc" / "tmp" / "exps").glob("tmp*/mlflow.db"))
    md = shell(project, SHOW_MD)
    assert md.returncode == 0 and "no_routing_loss" in md.stdout and "|" in md.stdout, md.stdout


def test_the_comparison_command_opens_the_mlflow_ui_on_the_projects_store(project):
    """README step 5: the table, then the UI on 127.0.0.1:5000 (stopped by the test once it answers)."""
    comparison_ui_serves(project, COMPARE, ABLATIONS)


def test_a_failing_experiment_makes_the_queue_command_fail_naming_it(project):
    bad = project / "experiments" / "too_big_a_batch.yaml"
    bad.write_text("train:\n  stage2:\n    batch_size: 64\n")  # valid params, no bucket holds 64 clips
    run = shell(project, "python -m experiments.ablations queue experiments/too_big_a_batch.yaml --run")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "too_big_a_batch (Failed)" in run.stderr and "dvc queue logs" in run.stderr
    logs = shell(project, LOGS.replace("NAME", "too_big_a_batch"))
    assert "no identity-count bucket has batch_size=64" in logs.stdout + logs.stderr, logs.stdout[-2000:]


RAY_HEAD = "ray start --head --port=6379 --num-cpus=32 --num-gpus=0 --temp-dir=/tmp/ray_$USER"  # docs/scaling.md
RAY_STUDY = "dvc exp run -S compute.engine=ray -S compute.address=auto"
RAY_STOP = "ray stop"


def test_curation_and_evaluation_join_a_ray_cluster_by_the_scaling_docs_commands(project):
    """docs/scaling.md, "A cluster by hand" on one node: the head, the study as a DVC experiment joining it
    (the stages run as `python -m`, as DVC runs them), then `ray stop`. The clips equal the local
    engine's."""
    shell(project, "git checkout -- params.yaml && dvc checkout -q")
    before = {p: (project / p).read_bytes() for p in ("data/curated/manifest.jsonl", "data/curated_heldout/manifest.jsonl")}
    head = shell(project, RAY_HEAD, timeout=300)
    try:
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        run = shell(project, RAY_STUDY)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        ran = sorted(line.split("'")[1] for line in run.stdout.splitlines() if line.startswith("Running stage '"))
        assert {"curate", "curate_heldout", "evaluate"} <= set(ran), ran
        for path, data in before.items():
            assert (project / path).read_bytes() == data, path
    finally:
        shell(project, RAY_STOP + " --force", timeout=120)
