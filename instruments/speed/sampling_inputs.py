"""One set of sampling inputs shared by every model of a benchmark: noise, image latents, prompts, RoPE, faces."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import get_resize_crop_region_for_grid

from instruments.speed.timed_models import BenchSize

LATENT_CHANNELS = 16
VAE_SPATIAL = 8
PATCH = 2


@dataclass
class SamplingInputs:
    """Inputs of one guided sampling run (batch 1 video; guidance doubles the batch inside the loop).

    latents, image_latents [1, F, 16, h, w]; prompt_embeds [2, T, D] ordered (negative, positive);
    rotary (cos, sin) [F * h/2 * w/2, head_dim]; id_cond [1, K, D_id]; id_vit_hidden 5 x [1, K, T_vit, D_vit].
    """

    latents: torch.Tensor
    image_latents: torch.Tensor
    prompt_embeds: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor]
    id_cond: torch.Tensor
    id_vit_hidden: list[torch.Tensor]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "SamplingInputs":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype)

        return SamplingInputs(
            move(self.latents), move(self.image_latents), move(self.prompt_embeds),
            (self.rotary[0].to(device), self.rotary[1].to(device)), move(self.id_cond), [move(v) for v in self.id_vit_hidden],
        )

    def first_identity(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """ConsisID's single-identity form: id_cond [1, D_id], id_vit_hidden 5 x [1, T_vit, D_vit]."""
        return self.id_cond[:, 0], [v[:, 0] for v in self.id_vit_hidden]


def rotary_embedding(size: BenchSize, base_height: int = 480, base_width: int = 720) -> tuple[torch.Tensor, torch.Tensor]:
    """3-D RoPE as `IngredientsPipeline` builds it: crop region against a fixed 480 x 720 base."""
    latent_frames = size.latent_shape[0]
    unit = VAE_SPATIAL * PATCH
    grid = (size.height // unit, size.width // unit)
    crops = get_resize_crop_region_for_grid(grid, base_width // unit, base_height // unit)
    return get_3d_rotary_pos_embed(embed_dim=size.head_dim, crops_coords=crops, grid_size=grid, temporal_size=latent_frames)


def make_sampling_inputs(
    size: BenchSize, identities: int, id_embed_dim: int, vit_dim: int, num_scales: int = 5, seed: int = 0
) -> SamplingInputs:
    """Seeded random inputs on CPU in float32 (move them with `.to`); the canvas latent fills frame 0 only."""
    if identities < 1:
        raise ValueError(f"identities must be >= 1, got {identities}")
    g = torch.Generator().manual_seed(seed)
    frames, height, width = size.latent_shape
    latents = torch.randn(1, frames, LATENT_CHANNELS, height, width, generator=g)
    image_latents = torch.zeros_like(latents)
    image_latents[:, :1] = torch.randn(1, 1, LATENT_CHANNELS, height, width, generator=g)
    return SamplingInputs(
        latents=latents,
        image_latents=image_latents,
        prompt_embeds=torch.randn(2, size.text_tokens, size.text_dim, generator=g),
        rotary=rotary_embedding(size),
        id_cond=torch.randn(1, identities, id_embed_dim, generator=g),
        id_vit_hidden=[torch.randn(1, identities, size.vit_tokens, vit_dim, generator=g) for _ in range(num_scales)],
    )
