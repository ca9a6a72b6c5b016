"""The GPU stages as 2 processes through DVC, by the commands docs/scaling.md shows (slow): in a
committed copy of the repository, `dvc repro` (one process each, one thread), then the documented
`dvc exp run` with 2 accelerate processes and with 2 Ray Train workers on a local Ray instance. Each
gives the one-process loss curves of both training stages within 1e-5 (same global batch), every
video, and MLflow records `num_processes` = 2 for both training stages and for sampling.

Time: 1917 s on 2 shared cores (load 8-16, 2026-12-07): the repro, then each experiment reruns the
training stages, sampling, the plan, evaluation and the report (Ray: a Ray start per stage).
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
from pathlib import Path

import pytest

from ingredients.config import load_merged
from tests.e2e.project import ROOT, commit, make_repo_copy, shell

DOCS = (ROOT / "docs" / "scaling.md").read_text()
ACCELERATE = "OMP_NUM_THREADS=1 dvc exp run -S launch.train.engine=accelerate -S launch.train.accelerate_config=configs/accelerate/cpu_ddp.yaml -S launch.train.num_processes=2 -S launch.sample.engine=accelerate -S launch.sample.accelerate_config=configs/accelerate/cpu_ddp.yaml -S launch.sample.num_processes=2"  # noqa: E501
RAY = "OMP_NUM_THREADS=1 dvc exp run -S launch.train.engine=ray -S launch.train.num_processes=2 -S launch.sample.engine=ray -S launch.sample.num_processes=2"  # noqa: E501
LOSS_RTOL = 1e-5
SMALL = {  # the tiny profile, shortened: 4 steps of global batch 2 per stage, checkpoints every 2
    "prepare": {"vae_fit_steps": 1, "vae_fit_videos": 1},
    "curate": {"masker": "box"},
    "compute": {"num_cpus": 2},
    "train": {"common": {"checkpoint": {"every": 2, "keep": 1}, "validation": {"every": 0}},
              "stage1": {"steps": 4, "batch_size": 2}, "stage2": {"steps": 4, "batch_size": 2}},
    "sample": {"methods": ["ours", "no_identity"], "steps": 2},
}
LOGS = ("models/stage1/train_log.csv", "models/stage2/train_log.csv")


def _losses(path: Path) -> list[tuple[float, ...]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, path
    return [tuple(float(r[k]) if r[k] else 0.0 for k in ("loss", "diffusion_loss", "routing_loss")) for r in rows]


def _last_runs(db: Path) -> dict[str, str]:
    """{stage tag: run id} of the newest MLflow run of each stage."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT t.value, r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                           "WHERE t.key = 'stage' ORDER BY r.start_time").fetchall()
        return dict(rows)
    finally:
        con.close()


def _num_processes(db: Path) -> dict[str, float]:
    runs = _last_runs(db)
    con = sqlite3.connect(db)
    try:
        out = {}
        for stage in ("stage1", "stage2"):
            (value,) = con.execute("SELECT value FROM params WHERE run_uuid = ? AND key = 'num_processes'",
                                   (runs[stage],)).fetchone()
            out[stage] = float(value)
        (value,) = con.execute("SELECT value FROM metrics WHERE run_uuid = ? AND key = 'num_processes'",
                               (runs["sample"],)).fetchone()
        out["sample"] = float(value)
        return out
    finally:
        con.close()


def _losses_worst(work: Path, baseline: Path) -> float:
    worst = 0.0
    for log in LOGS:
        one, two = _losses(baseline / log), _losses(work / log)
        assert len(one) == len(two) == 4, log
        worst = max([worst, *(abs(x - y) / max(abs(x), 1e-8) for a, b in zip(one, two) for x, y in zip(a, b))])
    return worst


def _sample_files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name != "processes.json")


def _samples(a_dir: Path, b_dir: Path) -> tuple[int, int]:
    """(videos, videos equal byte for byte) of two sample folders holding the same files."""
    files = _sample_files(a_dir)
    assert files == _sample_files(b_dir)
    assert (a_dir / "samples.json").read_bytes() == (b_dir / "samples.json").read_bytes()
    videos = [rel for rel in files if rel.suffix == ".mp4"]
    return len(videos), sum((a_dir / rel).read_bytes() == (b_dir / rel).read_bytes() for rel in videos)


def _keep(work: Path, dest: Path, rels: tuple[str, ...]) -> Path:
    for rel in rels:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (work / rel).is_dir() else shutil.copy)(work / rel, dest / rel)
    return dest


WEIGHTS = "models/stage2/model/transformer/diffusion_pytorch_model.safetensors"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_documented_two_process_experiments_match_one_process(tmp_path):
    """The loss curves of 2 processes (accelerate, then Ray Train) equal one process's within 1e-5;
    Ray Train's model equals accelerate's (DDP over 2 ranks either way, bit for bit); every video is
    there. The videos are counted, not asserted equal byte for byte: the sampler is not reproducible
    run to run at present (two one-process runs on the same model differed in 4 of 6 tiny videos)."""
    from ingredients.config import deep_merge

    assert ACCELERATE in DOCS and RAY in DOCS
    work = make_repo_copy(tmp_path / "project", deep_merge(load_merged(ROOT / "params.yaml"), SMALL))
    run = shell(work, "OMP_NUM_THREADS=1 dvc repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert _num_processes(work / "mlflow.db") == {"stage1": 1, "stage2": 1, "sample": 1}
    commit(work, "one process")
    baseline = _keep(work, tmp_path / "baseline", (*LOGS, "outputs/samples"))

    run = shell(work, ACCELERATE)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert _num_processes(work / "mlflow.db") == {"stage1": 2, "stage2": 2, "sample": 2}
    worst = _losses_worst(work, baseline)
    videos, same = _samples(baseline / "outputs/samples", work / "outputs/samples")
    print(f"accelerate, 2 processes: worst relative loss difference vs one process {worst:.2e}; "
          f"{same} of {videos} videos equal byte for byte")
    assert worst < LOSS_RTOL and videos >= 4
    two = _keep(work, tmp_path / "accelerate", ("outputs/samples", WEIGHTS))

    run = shell(work, RAY)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert _num_processes(work / "mlflow.db") == {"stage1": 2, "stage2": 2, "sample": 2}
    worst = _losses_worst(work, baseline)
    videos, same = _samples(two / "outputs/samples", work / "outputs/samples")
    print(f"Ray Train, 2 workers: worst relative loss difference vs one process {worst:.2e}; "
          f"{same} of {videos} videos equal accelerate's byte for byte")
    assert worst < LOSS_RTOL
    assert (work / WEIGHTS).read_bytes() == (two / WEIGHTS).read_bytes()  # DDP over 2 ranks either way
