"""MLflow's view of the study: the experiment is a model-training one (the UI opens on its runs), every
stage and method run nests under one parent run per study run (a `dvc repro` in the workspace, or one
DVC experiment) holding the changed params and the headline numbers, each run names the data its DVC
stage read with DVC's hash, and `ui` links the comparison of the current study's runs.

The stage calls are the ones dvc.yaml's commands make (`log_stage`, `log_to_mlflow`) on small
synthetic files; DVC's experiment environment (`DVC_EXP_NAME`, `DVC_EXP_BASELINE_REV`, `DVC_STAGE`)
is set as `dvc exp run` sets it. One SQLite store serves the module (creating one takes seconds);
each test logs to its own experiment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

from ingredients.mlflow_run import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, ensure_experiment, params_digest,
                                    study_run)
from study.mlflow_eval import log_to_mlflow
from study.mlflow_stage import log_stage, ui_urls

PARAMS = {"sample": {"steps": 8, "methods": ["ours", "no_identity"]}, "train": {"stage2": {"routing": {"weight": 1.0}}}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()  # creates the store once (its migrations take seconds)
    return uri


@pytest.fixture
def repo(tmp_path, monkeypatch, store, request):
    """A committed git repository with params.yaml logging to `store`, experiment named after the test."""
    for name in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_ROOT", "DVC_STAGE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, PARAMS, {"uri": store, "experiment": request.node.name})
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "params.yaml")
    git(tmp_path, "commit", "-q", "-m", "baseline")
    return tmp_path


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def write_params(repo: Path, params: dict, tracking: dict | None = None) -> Path:
    """params.yaml of `repo`: `params` with its `tracking:` section (default: the one it has)."""
    path = repo / "params.yaml"
    tracking = tracking or yaml.safe_load(path.read_text())["tracking"]
    path.write_text(yaml.safe_dump({"tracking": tracking, **params}))
    return path


def runs_of(repo: Path) -> list:
    import mlflow

    params = yaml.safe_load((repo / "params.yaml").read_text())["tracking"]
    client = mlflow.MlflowClient(params["uri"])
    experiment = client.get_experiment_by_name(params["experiment"])
    return client.search_runs([experiment.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"])


def top_level(runs: list) -> list:
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def exp_env(monkeypatch, name: str, rev: str) -> None:
    """What `dvc exp run -n NAME` puts in the environment of each stage it runs."""
    monkeypatch.setenv("DVC_EXP_NAME", name)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", rev)


def test_the_experiment_is_a_model_training_experiment(store):
    """MLflow 3's UI opens an experiment of this kind on its runs table (no kind: it guesses GenAI)."""
    import mlflow

    client = mlflow.MlflowClient(store)
    new = client.get_experiment(ensure_experiment(client, "kind-new"))
    assert new.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND == "custom_model_development"
    old = client.create_experiment("kind-old")  # a store from before: no kind
    guessed = client.create_experiment("kind-guessed", tags={EXPERIMENT_KIND_TAG: "genai_development_inferred"})
    chosen = client.create_experiment("kind-chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for experiment_id, name, kind in ((old, "kind-old", MODEL_TRAINING_KIND), (guessed, "kind-guessed", MODEL_TRAINING_KIND),
                                      (chosen, "kind-chosen", "genai_development")):
        assert ensure_experiment(client, name) == experiment_id
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == kind, name


def test_stage_runs_nest_under_one_parent_per_study_run(repo, monkeypatch):
    params = repo / "params.yaml"
    rev = git(repo, "rev-parse", "HEAD")
    # `dvc repro` in the workspace: two stages, one parent named workspace, no params changed
    first = log_stage("curate", params, ["sample"], [], [])
    second = log_stage("sample", params, ["sample"], [], [])
    # an ablation: `dvc exp run -n no_routing_loss -S train.stage2.routing.weight=0.0` (DVC rewrites params.yaml)
    write_params(repo, {**PARAMS, "train": {"stage2": {"routing": {"weight": 0.0}}}})
    exp_env(monkeypatch, "no_routing_loss", rev)
    third = log_stage("stage2", params, ["train"], [], [])
    fourth = log_stage("sample", params, ["sample"], [], [])

    runs = runs_of(repo)
    parents = top_level(runs)
    assert [p.info.run_name for p in parents] == ["workspace", "no_routing_loss"]
    workspace, ablation = parents
    by_id = {r.info.run_id: r for r in runs}
    assert {by_id[i].data.tags["mlflow.parentRunId"] for i in (first, second)} == {workspace.info.run_id}
    assert {by_id[i].data.tags["mlflow.parentRunId"] for i in (third, fourth)} == {ablation.info.run_id}
    assert len(runs) == 6
    # the parent holds the params that differ from the commit's params.yaml, and nothing else
    assert workspace.data.params == {}
    assert ablation.data.params == {"train.stage2.routing.weight": "0.0"}
    for parent in parents:
        assert parent.info.status == "FINISHED" and parent.data.tags["dvc_baseline_rev"] == rev
    assert ablation.data.tags["study_run"] == "no_routing_loss" and "commit " + rev in ablation.data.tags["mlflow.note.content"]
    assert by_id[third].data.tags["dvc_experiment"] == "no_routing_loss"


def test_a_later_experiment_and_a_workspace_rerun_with_other_params_get_their_own_rows(repo, monkeypatch):
    params = repo / "params.yaml"
    rev = git(repo, "rev-parse", "HEAD")
    log_stage("sample", params, ["sample"], [], [])
    log_stage("evaluate", params, ["sample"], [], [])  # a later stage of the same `dvc repro`: same row
    write_params(repo, {**PARAMS, "sample": {**PARAMS["sample"], "steps": 4}})  # edited, not committed
    log_stage("sample", params, ["sample"], [], [])
    exp_env(monkeypatch, "more_steps", rev)
    log_stage("sample", params, ["sample"], [], [])
    git(repo, "commit", "-qam", "four steps")  # the ablation's stage rerun on the new commit
    exp_env(monkeypatch, "more_steps", git(repo, "rev-parse", "HEAD"))
    log_stage("sample", params, ["sample"], [], [])

    parents = top_level(runs_of(repo))
    assert [(p.info.run_name, p.data.params) for p in parents] == [
        ("workspace", {}), ("workspace", {"sample.steps": "4"}), ("more_steps", {"sample.steps": "4"}), ("more_steps", {})]
    assert len(runs_of(repo)) == 4 + 5


def test_the_evaluation_nests_its_methods_and_gives_the_parent_the_headline_numbers(repo, monkeypatch):
    out = repo / "eval"
    out.mkdir()
    metrics = {method: {"face_sim/dlib": value, "face_found/dlib": 1.0, "by_k": {"2": {"face_sim/dlib": value / 2}}}
               for method, value in (("ours", 0.4), ("no_identity", 0.1), ("oracle", 0.9), ("canvas_only", 0.3))}
    (out / "metrics.json").write_text(json.dumps(metrics))
    exp_env(monkeypatch, "box_masks", git(repo, "rev-parse", "HEAD"))
    stage = log_stage("sample", repo / "params.yaml", ["sample"], [], [])
    uri = yaml.safe_load((repo / "params.yaml").read_text())["tracking"]["uri"]
    ids = log_to_mlflow(out, uri, yaml.safe_load((repo / "params.yaml").read_text())["tracking"]["experiment"],
                        params_file=repo / "params.yaml")

    runs = runs_of(repo)
    (parent,) = top_level(runs)
    assert parent.info.run_name == "box_masks"
    assert {r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id} == {stage, *ids.values()}
    assert parent.data.metrics == {
        "ours/face_sim/dlib": 0.4, "ours/face_found/dlib": 1.0, "no_identity/face_sim/dlib": 0.1,
        "no_identity/face_found/dlib": 1.0, "oracle/face_sim/dlib": 0.9, "oracle/face_found/dlib": 1.0}
    ours = next(r for r in runs if r.info.run_id == ids["ours"])
    assert ours.data.metrics["by_k.2.face_sim/dlib"] == 0.2 and ours.data.tags["dvc_experiment"] == "box_masks"


def test_a_dvc_stage_logs_the_data_it_depends_on_with_dvcs_hash(repo, monkeypatch):
    """With `DVC_STAGE` set (DVC sets it for the stage it runs), the run's dataset inputs are the
    stage's data deps, their digests what dvc.lock records; other data is told apart by its digest."""
    (repo / "data" / "curated").mkdir(parents=True)
    (repo / "data" / "curated" / "manifest.jsonl").write_text('{"clip": "a.mp4"}\n')
    (repo / "data" / "benchmark.jsonl").write_text('{"case": 1}\n')
    (repo / "code.py").write_text("")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"use": {
        "cmd": "true", "deps": ["data/curated", "data/benchmark.jsonl", "code.py"], "params": ["sample"]}}}))
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "-q"], cwd=repo, check=True)  # writes dvc.lock
    lock = {d["path"]: d["md5"] for d in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["use"]["deps"]}
    monkeypatch.setenv("DVC_STAGE", "use")
    first = log_stage("use", repo / "params.yaml", [], [], [])
    (repo / "data" / "benchmark.jsonl").write_text('{"case": 2}\n')  # other data, same study run
    second = log_stage("use", repo / "params.yaml", [], [], [])

    runs = {r.info.run_id: r for r in runs_of(repo)}
    seen = {}
    for run_id in (first, second):
        inputs = runs[run_id].inputs.dataset_inputs
        seen[run_id] = {i.dataset.name: i.dataset.digest for i in inputs}
        assert {t.key: t.value for i in inputs for t in i.tags} == {"mlflow.data.context": "use"}
        assert {json.loads(i.dataset.source)["uri"] for i in inputs} == {
            (repo / "data" / "curated").as_uri(), (repo / "data" / "benchmark.jsonl").as_uri()}
    assert seen[first] == {"data/curated": lock["data/curated"], "data/benchmark.jsonl": lock["data/benchmark.jsonl"]}
    assert seen[first]["data/curated"].endswith(".dir")
    assert seen[second]["data/curated"] == seen[first]["data/curated"]
    assert seen[second]["data/benchmark.jsonl"] != seen[first]["data/benchmark.jsonl"]
    (parent,) = top_level(list(runs.values()))
    assert sorted((i.dataset.name, i.dataset.digest) for i in parent.inputs.dataset_inputs) == sorted(
        {(name, digest) for inputs in seen.values() for name, digest in inputs.items()})  # both benchmarks
    assert not any(i.tags for i in parent.inputs.dataset_inputs)  # read by its stages, no context of its own


def test_outside_dvc_a_run_logs_no_inputs(repo):
    run_id = log_stage("sample", repo / "params.yaml", ["sample"], [], [])
    (run,) = [r for r in runs_of(repo) if r.info.run_id == run_id]
    assert run.inputs.dataset_inputs == []


def test_the_study_run_of_a_params_file_not_in_the_commit_compares_no_params(repo, monkeypatch):
    other = repo / "other.yaml"
    other.write_text(yaml.safe_dump(PARAMS))
    study = study_run(other)
    assert study.name == "workspace" and study.changed == {} and "not in commit" in study.baseline_note
    assert study.params_digest == params_digest(PARAMS)
    assert study_run(repo / "params.yaml").baseline_note == ""


def test_ui_links_the_comparison_of_the_workspace_run_and_the_commits_experiments(repo, monkeypatch):
    params = repo / "params.yaml"
    base = "http://127.0.0.1:5000"
    assert set(ui_urls(params, base)) <= {"runs"}  # one run or none: nothing to compare
    log_stage("sample", params, ["sample"], [], [])
    git(repo, "commit", "--allow-empty", "-qm", "baseline: dvc repro")  # as after `dvc repro`, then commit
    head = git(repo, "rev-parse", "HEAD")
    for name, weight in (("no_routing_loss", 0.0), ("mse_routing_loss", 2.0)):
        write_params(repo, {**PARAMS, "train": {"stage2": {"routing": {"weight": weight}}}})
        exp_env(monkeypatch, name, head)
        log_stage("stage2", params, ["train"], [], [])
    exp_env(monkeypatch, "older", "0" * 40)  # an experiment of another commit: not this study's
    log_stage("stage2", params, ["train"], [], [])
    write_params(repo, PARAMS)  # the workspace again (`dvc exp run` restores params.yaml)

    urls = ui_urls(params, base)
    parents = {p.info.run_name: p.info.run_id for p in top_level(runs_of(repo))}
    experiment_id = runs_of(repo)[0].info.experiment_id
    assert urls["runs"] == f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert urls["compare"].startswith(f"{base}/#/compare-runs?")
    query = urllib.parse.parse_qs(urls["compare"].split("?", 1)[1])
    assert json.loads(query["runs"][0]) == [parents["workspace"], parents["no_routing_loss"], parents["mse_routing_loss"]]
    assert json.loads(query["experiments"][0]) == [experiment_id] and query["workflowType"] == ["machine_learning"]
    assert urls["compared"] == "workspace, no_routing_loss, mse_routing_loss"
