"""The t2v_init ablation starts the image-condition channels of patch_embed at zero; its override lets
them train (a frozen backbone would keep them at zero: "canvas ignored", not "t2v initialisation")."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ingredients.config import deep_merge, load_params
from ingredients.model_folder.prepare import zero_image_channels
from ingredients.models import IngredientsTransformer3DModel
from ingredients.training import RunPaths, Trainer, build_stage_spec
from tests.training.conftest import train_params

ABLATION = Path(__file__).resolve().parents[2] / "experiments" / "t2v_init.yaml"


@pytest.fixture(scope="module")
def t2v_model(small_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("t2v") / "model"
    shutil.copytree(small_model, folder, symlinks=True)
    zero_image_channels(folder / "transformer")
    return folder


def _image_channels(model_dir: Path) -> torch.Tensor:
    weight = IngredientsTransformer3DModel.from_pretrained(model_dir / "transformer").patch_embed.proj.weight
    return weight[:, weight.shape[1] // 2 :].detach()  # [D, 2C, p, p]: noisy latents first, image latents second


def test_the_ablation_file_trains_patch_embed_in_both_stages():
    train = load_params(ABLATION)["train"]
    assert {stage: values["train"] for stage, values in train.items()} == {
        "stage1": {"patch_embed": True}, "stage2": {"patch_embed": True}}


@pytest.mark.parametrize("with_override", [True, False], ids=["t2v_init", "frozen"])
def test_image_channels_move_from_zero_only_with_the_override(tiny_manifest, t2v_model, tmp_path, with_override):
    assert torch.count_nonzero(_image_channels(t2v_model)) == 0
    params = train_params(stage1={"steps": 2, "validation": {"timesteps": [500], "num_clips": 1}})
    if with_override:
        params = deep_merge(params, load_params(ABLATION)["train"])
    spec = build_stage_spec(params, "stage1")
    model_dir = Trainer(spec, RunPaths(tiny_manifest, t2v_model, tmp_path / "run")).fit()
    moved = torch.count_nonzero(_image_channels(model_dir))
    if with_override:
        assert moved == _image_channels(model_dir).numel()  # Adam moves every weight off zero
    else:
        assert moved == 0
