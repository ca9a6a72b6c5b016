"""Quality guard for lossy speed switches: the same generation with the switch off and on, compared.

Reports the latent MSE (and relative L2) and the PSNR of the decoded frames (in [0, 1]) of the switched
run against the reference run. Used on the tiny pipeline by tests, and by `bench_sampling --mode quality`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import PIL.Image
import torch

from ingredients.pipelines import IngredientsPipeline
from ingredients.pipelines.step_cache import StepCacheConfig, disable_step_cache, enable_step_cache


def latent_mse(reference: torch.Tensor, test: torch.Tensor) -> float:
    if reference.shape != test.shape:
        raise ValueError(f"latent shapes differ: {tuple(reference.shape)} vs {tuple(test.shape)}")
    return float(((test.float() - reference.float()) ** 2).mean())


def frame_psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB over all frames and pixels (inf for identical frames)."""
    if reference.shape != test.shape:
        raise ValueError(f"frame shapes differ: {reference.shape} vs {test.shape}")
    mse = float(np.mean((test.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def decode_frames(pipe: IngredientsPipeline, latents: torch.Tensor) -> np.ndarray:
    """Latents [B, F, C, h, w] -> frames [B, T, H, W, 3] in [0, 1], as the pipeline's `output_type='np'`."""
    with torch.no_grad():
        video = pipe.decode_latents(latents.to(pipe.vae.dtype))
    return pipe.video_processor.postprocess_video(video=video, output_type="np")


def tiny_call_kwargs(pipe: IngredientsPipeline, identities: int = 2, steps: int = 20, seed: int = 0) -> dict[str, Any]:
    """Pipeline arguments for a seeded guided generation with random face features of the pipeline's sizes."""
    cfg = pipe.transformer.config
    g = torch.Generator().manual_seed(seed)
    vit_tokens = 577 if cfg.vit_dim == 1024 else 65
    height, width = cfg.sample_height * pipe.vae_scale_factor_spatial, cfg.sample_width * pipe.vae_scale_factor_spatial
    return {
        "prompt": "two people talking in a car",
        "image": PIL.Image.new("RGB", (width, height), "white"),
        "id_cond": torch.randn(1, identities, cfg.id_embed_dim, generator=g),
        "id_vit_hidden": [torch.randn(1, identities, vit_tokens, cfg.vit_dim, generator=g) for _ in range(cfg.num_vit_scales)],
        "num_inference_steps": steps,
        "guidance_scale": 6.0,
        "seed": seed,
    }


def generate_latents(pipe: IngredientsPipeline, call: dict[str, Any]) -> torch.Tensor:
    """The final latents of one seeded generation (`call`: pipeline arguments plus `seed`)."""
    call = dict(call)
    seed = call.pop("seed")
    return pipe(**call, generator=torch.Generator().manual_seed(seed), output_type="latent").frames


def step_cache_quality(
    pipe: IngredientsPipeline, config: StepCacheConfig, call: dict[str, Any], reference: torch.Tensor | None = None
) -> dict[str, Any]:
    """Generate with the step cache off and on (same seed); distances and the cache's skip statistics.

    `call`: pipeline arguments plus `seed` (see `tiny_call_kwargs`); `reference`: the uncached latents of
    the same call when already at hand.
    """
    if reference is None:
        reference = generate_latents(pipe, call)
    cache = enable_step_cache(pipe.transformer, config)
    try:
        cached = generate_latents(pipe, call)
    finally:
        disable_step_cache(pipe.transformer)
    ref_frames, test_frames = decode_frames(pipe, reference), decode_frames(pipe, cached)
    return {
        "threshold": config.threshold,
        "signal": config.signal,
        "per_branch": config.per_branch,
        "steps": call["num_inference_steps"],
        "latent_mse": latent_mse(reference, cached),
        "latent_rel_l2": float((cached.float() - reference.float()).norm() / reference.float().norm()),
        "latent_var": float(reference.float().var()),
        "frame_psnr_db": frame_psnr(ref_frames, test_frames),
        **{f"cache_{k}": v for k, v in cache.stats.summary().items()},
    }
