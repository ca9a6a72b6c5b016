"""Pipeline-level memory switches: VAE tiling and slicing, model CPU offload.

They trade speed for memory around the transformer (the VAE decode of 49 x 480 x 720 is the largest
single activation; offload keeps only the running component on the GPU).
"""

from __future__ import annotations

import logging

import torch

from ingredients.pipelines.pipeline_ingredients import IngredientsPipeline

logger = logging.getLogger(__name__)


def apply_memory_switches(
    pipe: IngredientsPipeline,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    cpu_offload: bool = False,
    device: torch.device | str = "cpu",
    tile_sample_min: tuple[int, int] | None = None,
    tile_overlap: float = 0.25,
) -> IngredientsPipeline:
    """Switch the VAE to tiled / sliced decoding and the pipeline to model CPU offload (else move it to `device`).

    `tile_sample_min` (height, width) sets the VAE's tile size in pixels and `tile_overlap` the overlap
    fraction between tiles (the CogVideoX VAE's defaults suit 480 x 720 video; a small video needs smaller
    tiles for tiling to engage at all, and with 64-pixel tiles the default overlaps (1/6, 1/5) decode
    the tiny VAE's 128 x 128 video to 140 x 136, so an overlap that divides the tile evenly is set).
    """
    if vae_slicing:
        pipe.vae.enable_slicing()
    if vae_tiling:
        if tile_sample_min is None:
            pipe.vae.enable_tiling()
        else:
            height, width = tile_sample_min
            pipe.vae.enable_tiling(
                tile_sample_min_height=height, tile_sample_min_width=width,
                tile_overlap_factor_height=tile_overlap, tile_overlap_factor_width=tile_overlap,
            )
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    logger.info("pipeline switches: vae_tiling=%s vae_slicing=%s cpu_offload=%s device=%s", vae_tiling, vae_slicing, cpu_offload, device)
    return pipe
