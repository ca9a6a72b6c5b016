"""Kill training with SIGKILL mid-run, resume from the latest checkpoint: the final weights and the
loss curve equal an uninterrupted run's, bit for bit, on CPU. Resume errors are errors."""

from __future__ import annotations

import csv
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ingredients.training import RunPaths, Trainer, build_stage_spec
from tests.interruption import assert_no_partial_outputs
from tests.training.conftest import run_cli, train_params

STEPS = 10


def _params(cache: Path) -> dict:
    # LoRA + EMA + warm-up cosine + accumulation + dropout: every piece of state a resume must restore
    return train_params(
        common={"precompute": {"enabled": True, "cache_dir": str(cache)},
                "validation": {"num_clips": 1, "timesteps": [500], "inference_steps": 0},
                "dropout": {"text": 0.3, "identity": 0.3}, "image_noise": {"enabled": True}},
        stage1={"steps": STEPS, "grad_accum": 2, "batch_size": 1, "lr": 2e-3,
                "train": {"backbone": "lora", "lora_rank": 2}, "ema": {"enabled": True, "decay": 0.9},
                "lr_schedule": {"name": "cosine", "warmup_steps": 3},
                "checkpoint": {"every": 2, "keep": 10}},
    )


def _args(params_file: Path, manifest: Path, init: Path, out: Path, *extra: str) -> list[str]:
    return ["--params", str(params_file), "--stage", "stage1", "--manifest", str(manifest), "--init", str(init),
            "--out", str(out), *extra]


def _losses(out: Path) -> list[tuple[int, str, str]]:
    with open(out / "train_log.csv", newline="") as f:
        return [(int(r["step"]), r["loss"], r["lr"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(tiny_manifest, small_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump({"train": _params(root / "cache")}))
    full, killed = root / "full", root / "killed"

    proc = run_cli(_args(params_file, tiny_manifest, small_model, full))
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]

    proc = run_cli(_args(params_file, tiny_manifest, small_model, killed))
    target = killed / "checkpoints" / "step-00000004" / "state.json"
    deadline = time.monotonic() + 600
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{log[-3000:]}"
    assert not (killed / "model").exists()
    interrupted_at = max(int(p.name.split("-")[1]) for p in (killed / "checkpoints").glob("step-*"))
    assert 4 <= interrupted_at < STEPS
    assert_no_partial_outputs(killed)  # checkpoints, train_log.csv, validation images: complete or temp

    proc = run_cli(_args(params_file, tiny_manifest, small_model, killed, "--resume", "latest"))
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]
    assert_no_partial_outputs(killed, allow_temps=False)
    return full, killed, interrupted_at, log


def test_resumed_weights_equal_uninterrupted(runs):
    full, killed, interrupted_at, log = runs
    assert f"resumed from {killed / 'checkpoints'}" in log
    a = load_file(str(full / "model" / "transformer" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(killed / "model" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert set(a) == set(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    # the final checkpoints agree too: raw weights, EMA, optimizer moments
    ca, cb = (p / "checkpoints" / f"step-{STEPS:08d}" for p in (full, killed))
    for name in ("trainable.safetensors", "ema.safetensors"):
        ta, tb = load_file(str(ca / name)), load_file(str(cb / name))
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
    oa = torch.load(ca / "optimizer.pt", weights_only=True)
    ob = torch.load(cb / "optimizer.pt", weights_only=True)
    assert all(torch.equal(oa["state"][i]["exp_avg_sq"], ob["state"][i]["exp_avg_sq"]) for i in oa["state"])


def test_resumed_loss_curve_equals_uninterrupted(runs):
    full, killed, _, _ = runs
    assert _losses(killed) == _losses(full)
    assert [s for s, _, _ in _losses(full)] == list(range(1, STEPS + 1))


def test_resume_from_a_missing_checkpoint_is_an_error(tiny_manifest, small_model, tmp_path):
    spec = build_stage_spec(_params(tmp_path / "cache"), "stage1")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint under"):
        Trainer(spec, RunPaths(tiny_manifest, small_model, tmp_path / "run", resume="latest"))
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        Trainer(spec, RunPaths(tiny_manifest, small_model, tmp_path / "run", resume=str(tmp_path / "nope")))


def test_resume_with_changed_params_is_an_error(runs, tiny_manifest, small_model):
    full, _, _, _ = runs
    params = _params(full.parent / "cache")
    params["stage1"]["lr"] = 1e-3
    params["stage1"]["steps"] = STEPS + 5  # more steps may differ; the learning rate may not
    spec = build_stage_spec(params, "stage1")
    with pytest.raises(ValueError, match=r"params differ from the checkpoint's:\n  lr: checkpoint 0.002, now 0.001$"):
        Trainer(spec, RunPaths(tiny_manifest, small_model, full, resume="latest")).fit()


def test_resume_latest_of_a_finished_run_is_a_no_op(runs, tiny_manifest, small_model):
    """`--resume latest` after the run finished: exit 0, says so, writes nothing (was: a ValueError traceback)."""
    full = runs[0]
    params_file = full.parent / "params.yaml"
    before = {p: p.stat().st_mtime_ns for p in full.rglob("*") if p.is_file()}
    proc = run_cli(_args(params_file, tiny_manifest, small_model, full, "--resume", "latest"))
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-3000:]
    assert "the run is finished, nothing to do" in log and "Traceback" not in log
    assert {p: p.stat().st_mtime_ns for p in full.rglob("*") if p.is_file()} == before
