"""Real DDP over gloo: `accelerate launch` with 2 CPU processes runs a short stage-2 job and gives
the loss curve of one process with the same global batch.

Launch note: accelerate 1.15's `--cpu --num_processes 2` starts a single process unless MPI is
configured, so the test launches with configs/accelerate/cpu_ddp.yaml (torchrun-style launcher; the
trainer selects CPU + gloo when there is no GPU).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.training.conftest import REPO_ROOT, run_cli, train_params

# per-process gradients averaged by DDP vs one batch: equal up to float32 rounding. Measured over 8
# steps (seed 0, image noise on): losses and grad norms differ by at most 4.6e-6 relative; weights by
# 2.5e-4 in one projector tensor (local_facial_extractor.mapping_3.0.weight), 8e-5 elsewhere (2.9e-5
# with image noise off): Adam divides by sqrt(v), so rounding in small gradients shows up as
# fractions of an lr step (here 2e-3).
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 5e-4
# The router's LayerNorm bias on the ID tokens shifts every identity's key equally, which the
# softmax over identities cancels: its true gradient is 0, and Adam turns the rounding noise of that
# zero into +-lr steps, so those two tensors differ at the lr scale in any two runs. They do not
# change any output (also checked below).
ZERO_GRADIENT = {"router.0.norm1.bias", "router.1.norm1.bias"}

logger = logging.getLogger(__name__)


def _params(cache: Path) -> dict:
    return train_params(
        common={"precompute": {"enabled": True, "cache_dir": str(cache)},
                "validation": {"num_clips": 1, "timesteps": [500], "inference_steps": 0},
                "dropout": {"text": 0.2, "identity": 0.2}, "image_noise": {"enabled": True}},
        stage2={"steps": 8, "batch_size": 2, "init_from": "model"},
    )


def _rows(out: Path) -> list[dict]:
    with open(out / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_manifest, small_model, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(__import__("sys").executable).parent))
    assert accelerate, "the accelerate CLI is not installed beside this Python"
    outs = {}
    for name, launcher in (("single", None),
                           ("ddp", [accelerate, "launch", "--config_file", str(REPO_ROOT / "configs/accelerate/cpu_ddp.yaml")])):
        params_file = tmp_path / f"{name}.yaml"
        params_file.write_text(yaml.safe_dump({"train": _params(tmp_path / f"cache_{name}")}))
        out = tmp_path / name
        proc = run_cli(["--params", str(params_file), "--stage", "stage2", "--manifest", str(tiny_manifest),
                        "--init", str(small_model), "--out", str(out)], launcher=launcher)
        log = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, log[-4000:]
        outs[name] = out
    info = {n: json.loads((o / "model" / "training_info.json").read_text()) for n, o in outs.items()}
    assert info["single"]["num_processes"] == 1 and info["ddp"]["num_processes"] == 2

    single, ddp = _rows(outs["single"]), _rows(outs["ddp"])
    assert [r["step"] for r in single] == [r["step"] for r in ddp] == [str(s) for s in range(1, 9)]
    worst = 0.0
    for a, b in zip(single, ddp):
        for key in ("loss", "diffusion_loss", "routing_loss", "grad_norm"):
            x, y = float(a[key]), float(b[key])
            worst = max(worst, abs(x - y) / max(abs(x), 1e-8))
    logger.info(f"max relative difference of logged losses/grad norms, 1 vs 2 processes: {worst:.2e}")
    assert worst < LOSS_RTOL
    wa = load_file(str(outs["single"] / "model" / "transformer" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(outs["ddp"] / "model" / "transformer" / "diffusion_pytorch_model.safetensors"))
    max_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa if k not in ZERO_GRADIENT)
    logger.info(f"max weight difference after 8 steps: {max_diff:.2e}")
    assert max_diff < WEIGHT_ATOL
    _check_router_bias_is_inert(outs["single"] / "model")
    # the runs trained: the routers moved
    base = load_file(str(small_model / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert not torch.equal(wa["router.0.to_q.weight"], base["router.0.to_q.weight"])


def _check_router_bias_is_inert(model_dir: Path) -> None:
    from ingredients.model_folder.folder import load_pipeline

    model = load_pipeline(model_dir).transformer
    g = torch.Generator().manual_seed(0)
    tokens, hidden = torch.randn(1, 2, 8, 64, generator=g), torch.randn(1, 16, 96, generator=g)
    router = model.router[0]
    before = router(tokens, hidden).softmax(-1)
    with torch.no_grad():
        router.norm1.bias.add_(torch.randn(router.norm1.bias.shape, generator=g))
    torch.testing.assert_close(router(tokens, hidden).softmax(-1), before, rtol=1e-5, atol=1e-6)
