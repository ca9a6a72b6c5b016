"""The prepare stage: tiny folder built and fitted, full profile checked fast, folders written atomically."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import yaml

from ingredients.files.atomic import atomic_dir
from ingredients.model_folder.prepare import PrepareParams
from ingredients.model_folder.folder import load_pipeline
from ingredients.models import IngredientsTransformer3DModel
from ingredients.model_folder.prepare import main, prepare_tiny, required_full_files
from ingredients.files.video_io import write_video


def test_full_profile_missing_files_fail_fast_naming_each(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"prepare": {"profile": "full", "full": {
        "backbone": str(tmp_path / "nope/CogVideoX-5b-I2V"), "antelopev2": str(tmp_path / "nope/antelopev2"),
        "eva_clip": str(tmp_path / "nope/eva.pt"), "curricularface": str(tmp_path / "nope/cur.bin"),
        "clip_score": str(tmp_path / "nope/clip.bin")}}}))
    start = time.monotonic()
    with pytest.raises(SystemExit) as err:
        main(["--params", str(params), "--out", str(tmp_path / "models/base")])
    assert time.monotonic() - start < 10
    message = str(err.value)
    for required in required_full_files(PrepareParams(**yaml.safe_load(params.read_text())["prepare"])):
        assert str(required.path) in message
    assert "hf download THUDM/CogVideoX-5b-I2V" in message and "glintr100.onnx" in message
    assert not (tmp_path / "models/base").exists()


def test_tiny_prepare_fits_the_vae_and_zeroes_image_channels_for_t2v(tmp_path):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    write_video(raw / "clip.mp4", rng.integers(0, 255, (9, 144, 176, 3), dtype=np.uint8), fps=8)
    summary = prepare_tiny(PrepareParams(vae_fit_steps=2, backbone_init="t2v"), tmp_path / "base", raw)
    assert summary["vae_fit"]["steps"] == 2 and summary["vae_fit"]["clips"] == 1
    model = IngredientsTransformer3DModel.from_pretrained(tmp_path / "base" / "transformer")
    weight = model.patch_embed.proj.weight  # [D, 2C, p, p]
    assert torch.count_nonzero(weight[:, weight.shape[1] // 2 :]) == 0
    assert torch.count_nonzero(weight[:, : weight.shape[1] // 2]) > 0
    assert load_pipeline(tmp_path / "base").transformer.config.id_embed_dim == 160
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_atomic_dir_leaves_nothing_on_failure_and_replaces_on_success(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "done.txt").write_text("done")
    assert [p.name for p in target.iterdir()] == ["done.txt"]
