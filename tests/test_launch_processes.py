"""The launch layer's multi-process engines, run through `python -m ingredients.launch` as dvc.yaml
runs it (slow): 2 accelerate processes and 2 Ray Train workers on a local Ray instance give one
process's loss curve at the same global batch; a Ray Train worker SIGKILLed mid-stage restarts the
group from the stage's last checkpoint and the final weights equal the uninterrupted run's; Ray
Train sampling splits the cases between its workers and resumes per case.

Times (2 shared cores, load 5-18, 2026-12-07): see each test's comment.
"""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.training.conftest import REPO_ROOT, SMALL_MODEL, small_model, tiny_manifest, train_params  # noqa: F401

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
       "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO_ROOT)}
LOSS_RTOL = 1e-5  # the bound on the loss curve, N processes vs one, same global batch
# the router LayerNorm biases whose true gradient is 0 (tests/training/test_ddp.py): Adam moves them
# by rounding noise, at the lr scale, in any two runs that round differently
ZERO_GRADIENT = {"router.0.norm1.bias", "router.1.norm1.bias"}
WEIGHTS = "model/transformer/diffusion_pytorch_model.safetensors"
STEPS = 8


def _write_params(path: Path, tmp: Path, launch: dict | None = None) -> Path:
    train = train_params(
        common={"precompute": {"enabled": True}, "image_noise": {"enabled": True}, "log_mlflow": True,
                "validation": {"num_clips": 1, "timesteps": [500], "inference_steps": 0},
                "dropout": {"text": 0.2, "identity": 0.2}, "checkpoint": {"every": 2, "keep": 10}},
        stage2={"steps": STEPS, "batch_size": 2, "init_from": "model"},
    )
    params = {"train": train, "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "launch"},
              "compute": {"engine": "ray", "num_cpus": 2}, "launch": launch or {}}
    path.write_text(yaml.safe_dump(params))
    return path


def _train_cmd(params: Path, engine: str, processes: int, manifest: Path, model: Path, out: Path) -> list[str]:
    config = "configs/accelerate/cpu_ddp.yaml" if engine == "accelerate" else "configs/accelerate/cpu_single.yaml"
    return [sys.executable, "-m", "ingredients.launch", "--params", str(params), "--stage", "train_stage2",
            "--engine", engine, "--accelerate-config", config, "--num-processes", str(processes),
            "-m", "ingredients.training.train", "--params", str(params), "--stage", "stage2",
            "--manifest", str(manifest), "--init", str(model), "--out", str(out), "--resume", "auto"]


def _run(cmd: list[str], timeout: int = 900) -> str:
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done.stdout + done.stderr


def _losses(out: Path) -> list[tuple[float, ...]]:
    with open(out / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    return [tuple(float(r[k]) for k in ("loss", "diffusion_loss", "routing_loss")) for r in rows]


def _worst_relative(a: list[tuple[float, ...]], b: list[tuple[float, ...]]) -> float:
    return max(abs(x - y) / max(abs(x), 1e-8) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def _mlflow_param(db: Path, key: str) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [v for (v,) in con.execute("SELECT value FROM params WHERE key = ?", (key,))]
    finally:
        con.close()


@pytest.fixture(scope="module")
def one_process(tiny_manifest, small_model, tmp_path_factory) -> Path:  # noqa: F811
    tmp = tmp_path_factory.mktemp("one_process")
    params = _write_params(tmp / "params.yaml", tmp)
    _run(_train_cmd(params, "local", 1, tiny_manifest, small_model, tmp / "out"))
    assert _mlflow_param(tmp / "mlflow.db", "num_processes") == ["1"]
    return tmp / "out"


@pytest.fixture(scope="module")
def ray_uninterrupted(tiny_manifest, small_model, tmp_path_factory) -> Path:  # noqa: F811
    tmp = tmp_path_factory.mktemp("ray")
    # a device memory to plan against: the pre-flight's planned peak reaches the trainer's MLflow run
    params = _write_params(tmp / "params.yaml", tmp, {"device_memory_gib": 8.0})
    log = _run(_train_cmd(params, "ray", 2, tiny_manifest, small_model, tmp / "out"))
    assert "pre-flight of train_stage2" in log
    assert _mlflow_param(tmp / "mlflow.db", "num_processes") == ["2"]
    planned = _mlflow_param(tmp / "mlflow.db", "planned_peak_gib")
    assert len(planned) == 1 and 0 < float(planned[0]) < 8.0
    return tmp / "out"


# 254 s (load 11): one process, then 2 accelerate processes (8 steps each)
def test_two_accelerate_processes_give_the_loss_curve_of_one(one_process, tiny_manifest, small_model, tmp_path):  # noqa: F811
    params = _write_params(tmp_path / "params.yaml", tmp_path)
    _run(_train_cmd(params, "accelerate", 2, tiny_manifest, small_model, tmp_path / "out"))
    assert _mlflow_param(tmp_path / "mlflow.db", "num_processes") == ["2"]
    worst = _worst_relative(_losses(one_process), _losses(tmp_path / "out"))
    print(f"accelerate 2 processes vs 1: worst relative loss difference {worst:.2e}")
    assert worst < LOSS_RTOL


# 197 s (load 5), the one-process run included; most of the Ray run is Ray starting its workers
def test_ray_train_gives_the_loss_curve_of_one_process(one_process, ray_uninterrupted):
    worst = _worst_relative(_losses(one_process), _losses(ray_uninterrupted))
    print(f"Ray Train 2 workers vs 1 process: worst relative loss difference {worst:.2e}")
    assert worst < LOSS_RTOL


def _train_workers(driver: psutil.Process) -> list[psutil.Process]:
    found = []
    for p in driver.children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


# 381 s (load 11-18): the uninterrupted Ray Train run, then one with a worker killed after the step-2
# checkpoint and its restart
def test_a_killed_ray_worker_restarts_from_the_checkpoint(ray_uninterrupted, tiny_manifest, small_model, tmp_path):  # noqa: F811
    params = _write_params(tmp_path / "params.yaml", tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(_train_cmd(params, "ray", 2, tiny_manifest, small_model, out), cwd=REPO_ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (out / "checkpoints" / "step-00000002" / "state.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no step-2 checkpoint"
            time.sleep(0.2)
        workers = _train_workers(psutil.Process(proc.pid))
        assert len(workers) == 2, [w.cmdline() for w in workers]
        assert not (out / "model").exists()  # mid-stage
        os.kill(workers[-1].pid, signal.SIGKILL)
        killed_after = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
        log = proc.communicate(timeout=900)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-5000:]
    assert "resumed from" in log, log[-5000:]
    print(f"killed a worker with checkpoints {killed_after} on disk")
    a, b = load_file(str(ray_uninterrupted / WEIGHTS)), load_file(str(out / WEIGHTS))
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if k not in ZERO_GRADIENT)
    print(f"killed and restarted vs uninterrupted Ray Train run: max weight difference {worst:.2e}")
    assert worst == 0.0
    assert _losses(out) == _losses(ray_uninterrupted)


# 358 s (load 6-12): 2 Ray Train workers, then a resume with one video gone (two Ray starts)
def test_ray_train_sampling_splits_the_cases_and_resumes_per_case(tmp_path):
    """Each of the 2 workers samples its half of the (method, case) list; a rerun after one video is
    lost samples only that one. (The videos are not compared with a one-process run's byte for byte:
    two one-process runs of this sampler on the same inputs, one thread each, differed in 4 of 6
    tiny videos when measured, 2026-12-07; see the report of issue 28.)"""
    from ingredients.model_folder.folder import prepare_tiny_folder
    from instruments.photo_cases import write_photo_cases

    prepare_tiny_folder(tmp_path / "model", seed=0, **SMALL_MODEL)
    bench = write_photo_cases(tmp_path / "bench")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"sample": {"methods": ["ours", "no_identity"], "steps": 1, "guidance_scale": 1.0},
                                      "compute": {"engine": "ray", "num_cpus": 2}}))
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "ingredients.launch", "--params", str(params), "--stage", "sample", "--engine", "ray",
           "--num-processes", "2", "-m", "ingredients.sampling.sample", "--params", str(params), "--benchmark", str(bench),
           "--model", str(tmp_path / "model"), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    log = _run(cmd)
    assert log.count("sampled 3 videos (0 already present)") == 2, log[-4000:]  # 6 videos split 3 + 3
    videos = sorted(str(p.relative_to(out)) for p in out.rglob("*.mp4"))
    assert videos == [f"{m}/{c}.mp4" for m in ("no_identity", "ours") for c in ("astronaut_grace", "hanks_t1a", "t1b_astronaut")]
    assert (out / "processes.json").read_text().count('"num_processes": 2') == 1
    kept = {v: (out / v).stat().st_mtime_ns for v in videos}
    lost = out / "no_identity" / "t1b_astronaut.mp4"
    lost.unlink()
    log = _run(cmd)
    assert "sampled 1 videos (2 already present)" in log and "sampled 0 videos (3 already present)" in log, log[-4000:]
    assert lost.is_file()
    assert all((out / v).stat().st_mtime_ns == t for v, t in kept.items() if out / v != lost)  # the others untouched
