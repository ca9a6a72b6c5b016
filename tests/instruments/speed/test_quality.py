"""Quality guard of the lossy switch (step cache) on the tiny pipeline: it skips steps and stays close.

Bounds: latent relative L2 < 0.05 and decoded-frame PSNR > 35 dB against the uncached run (a different
seed is at relative L2 ~1 and ~13-16 dB). The tiny transformer is untrained, so its step-to-step changes
are large (first-block residual ~0.3-0.5 per step at 20 steps, vs the 0.05-0.1 thresholds used with
trained models); the thresholds below are the ones at which it skips about a third of the branch-steps.
"""

from __future__ import annotations

import pytest

from instruments.speed.sampling_speed import main
from instruments.speed import (
    StepCacheConfig,
    decode_frames,
    frame_psnr,
    generate_latents,
    latent_mse,
    step_cache_quality,
    tiny_call_kwargs,
)
from ingredients.model_folder.tiny import build_tiny_pipeline

MAX_LATENT_REL_L2 = 0.05
MIN_FRAME_PSNR_DB = 35.0


@pytest.fixture(scope="module")
def tiny():
    pipe = build_tiny_pipeline(0)
    pipe.set_progress_bar_config(disable=True)
    call = tiny_call_kwargs(pipe, identities=2, steps=20, seed=0)
    return pipe, call, generate_latents(pipe, call)


@pytest.mark.parametrize(("signal", "threshold"), [("first_block", 0.45), ("modulated_input", 0.3)])
def test_step_cache_skips_and_stays_close(tiny, signal, threshold):
    pipe, call, reference = tiny
    result = step_cache_quality(pipe, StepCacheConfig(threshold=threshold, signal=signal), call, reference)
    assert result["cache_calls"] == 20 and result["cache_row_steps"] == 40
    assert result["cache_row_steps_skipped"] >= 8, result["cache_computed"]
    assert result["cache_computed"][0] == [True, True]  # nothing to reuse on the first step
    assert result["latent_rel_l2"] < MAX_LATENT_REL_L2
    assert result["latent_mse"] < MAX_LATENT_REL_L2**2 * result["latent_var"]
    assert result["frame_psnr_db"] > MIN_FRAME_PSNR_DB


def test_bounds_separate_a_different_generation(tiny):
    """The same metrics on a different seed fail the bounds by far: they can tell a changed video apart."""
    pipe, call, reference = tiny
    other = generate_latents(pipe, {**call, "seed": 1})
    assert latent_mse(reference, other) > 0.5 * reference.var().item()
    assert frame_psnr(decode_frames(pipe, reference), decode_frames(pipe, other)) < 25.0


def test_quality_mode_of_the_script(tmp_path):
    """`--mode quality` with threshold 0 skips nothing and reports identical frames (JSON has no inf)."""
    result = main(["--mode", "quality", "--step-cache", "modulated_input", "--cache-threshold", "0", "--steps", "3"])
    assert result["latent_mse"] == 0.0 and result["frame_psnr_db"] is None and result["frames_identical"]
    assert result["cache_row_steps_skipped"] == 0 and result["cache_calls"] == 3
    with pytest.raises(SystemExit):
        main(["--mode", "quality", "--step-cache", "off"])
