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


SMALL_VAE = {"down_block_types": ["CogVideoXDownBlock3D"] * 3, "up_block_types": ["CogVideoXUpBlock3D"] * 3,
             "block_out_channels": [32, 64, 64], "latent_channels": 8}  # profiles/small.yaml's


def test_prepare_vae_keys_build_a_4x_vae_and_the_transformer_follows_its_latents():
    """prepare.vae replaces tiny VAE config keys; the transformer takes its latent channels (x2 for the
    image latents) and the 128 x 128 video's latent grid; the tiny defaults are unchanged."""
    from diffusers import AutoencoderKLCogVideoX

    from ingredients.model_folder.tiny import tiny_transformer_config, tiny_vae_config

    tiny = tiny_transformer_config()
    assert (tiny["in_channels"], tiny["out_channels"], tiny["sample_height"], tiny["sample_width"]) == (8, 4, 16, 16)
    assert tiny_vae_config()["block_out_channels"] == [16, 16, 32, 32]
    small = tiny_vae_config(**SMALL_VAE)
    cfg = tiny_transformer_config(small)
    assert (cfg["in_channels"], cfg["out_channels"], cfg["sample_height"], cfg["sample_width"]) == (16, 8, 32, 32)
    vae = AutoencoderKLCogVideoX(**small)
    assert sum(p.numel() for p in vae.parameters()) == pytest.approx(2.5e6, rel=0.05)
    with torch.no_grad():
        latent = vae.encode(torch.zeros(1, 3, 1, 128, 128)).latent_dist.mode()
    assert latent.shape == (1, 8, 1, cfg["sample_height"], cfg["sample_width"])  # [1, C, F, h, w]


@pytest.mark.slow  # 36-51 s on 2 cores at load 11-12 (the tiny folder build, one VAE step)
def test_small_vae_prepared_and_fitted_on_single_frames(tmp_path):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_video(raw / f"{name}.mp4", rng.integers(0, 255, (10, 128, 128, 3), dtype=np.uint8), fps=8)
    params = PrepareParams(vae=SMALL_VAE, vae_fit_steps=1, vae_fit_video_frames=5, vae_fit_frames=1, vae_fit_batch=2)
    summary = prepare_tiny(params, tmp_path / "base", raw)
    assert summary["vae_fit"]["clips"] == 2 * 5  # 5 single frames of each video
    pipe = load_pipeline(tmp_path / "base")
    assert pipe.vae_scale_factor_spatial == 4 and pipe.transformer.config.in_channels == 16


@pytest.mark.parametrize(("key", "value", "message"), [
    ("vae", {"block_out_channel": [8]}, "prepare.vae: unknown tiny VAE keys: \\['block_out_channel'\\]"),
    ("vae", {"block_out_channels": [32, 64]}, "must have one length"),
    ("vae_fit_frames", 3, "must be 4 k \\+ 1"),
    ("vae_fit_frames", 5, "divide prepare.vae_fit_video_frames \\(9\\)"),
])
def test_bad_vae_keys_are_named(key, value, message):
    from ingredients.config import ParamsError, validate_model

    with pytest.raises(ParamsError, match=message):
        validate_model(PrepareParams, {key: value}, "prepare")
