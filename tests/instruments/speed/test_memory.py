"""Peak-memory phases on CPU, and the pipeline-level memory switches (VAE tiling/slicing, CPU offload)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instruments.speed.sampling_speed import main
from instruments.speed import apply_memory_switches, decode_frames, frame_psnr, generate_latents, tiny_call_kwargs
from ingredients.peak_memory import peak_bytes, peak_memory, reset_peak_memory
from ingredients.model_folder.tiny import build_tiny_pipeline


def test_peak_rss_is_reset_between_phases():
    assert reset_peak_memory("cpu")
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    del block
    with_block = peak_bytes(peak_memory("cpu"))
    assert reset_peak_memory("cpu")
    without = peak_bytes(peak_memory("cpu"))
    assert with_block - without > 250 * 2**20
    with pytest.raises(KeyError, match="not a peak_memory record"):
        peak_bytes({"scope": "since_reset"})


def test_vae_tiling_and_slicing_decode_close_to_plain():
    """Tiled decoding blends overlapping tiles: close to the plain decode (~30 dB), far from another video."""
    pipe = build_tiny_pipeline(0)
    pipe.set_progress_bar_config(disable=True)
    call = tiny_call_kwargs(pipe, identities=2, steps=2, seed=0)
    latents = generate_latents(pipe, call)
    plain = decode_frames(pipe, latents)
    other = decode_frames(pipe, generate_latents(pipe, {**call, "seed": 1}))
    apply_memory_switches(pipe, vae_tiling=True, vae_slicing=True, tile_sample_min=(64, 64))
    assert pipe.vae.use_tiling and pipe.vae.use_slicing and pipe.vae.tile_sample_min_height == 64
    tiled = decode_frames(pipe, latents)
    assert tiled.shape == plain.shape == (1, 9, 128, 128, 3)
    assert frame_psnr(plain, tiled) > 25.0 > frame_psnr(plain, other)


def test_pipeline_mode_with_cpu_offload():
    result = main(["--mode", "pipeline", "--steps", "2", "--vae-tiling", "--vae-tile", "64", "64", "--vae-slicing", "--cpu-offload"])
    assert result["pipeline"] == "tiny" and result["frames_shape"] == [1, 9, 128, 128, 3]
    assert result["switches"] == {"vae_tiling": True, "vae_tile": [64, 64], "vae_slicing": True, "cpu_offload": True}
    assert result["seconds"] > 0 and result["peak_memory"]["peak_rss_bytes"] > 50e6
    assert torch.get_num_threads() == 1  # the script's --threads default


def test_pipeline_mode_loads_a_saved_folder(tmp_path):
    from ingredients.model_folder.tiny import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "model", seed=0)
    result = main(["--mode", "pipeline", "--pipeline-folder", str(folder), "--steps", "1", "--identities", "1"])
    assert result["pipeline"] == str(folder) and result["frames_shape"] == [1, 9, 128, 128, 3]
    assert result["switches"] == {"vae_tiling": False, "vae_tile": None, "vae_slicing": False, "cpu_offload": False}
