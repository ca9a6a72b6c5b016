"""The three transformers of the sampling benchmark, at full or reduced size, randomly initialised.

- ours: `IngredientsTransformer3DModel` (full size = its defaults: CogVideoX-5B-I2V backbone, 42 layers,
  48 heads x 64, in_channels 32, text 4096, sample 60 x 90 x 49 frames, identity modules,
  cross_attn_interval 2);
- consisid: diffusers' `ConsisIDTransformer3DModel` with `is_train_face=True`. Its class defaults (30 heads,
  30 layers, in_channels 16, no RoPE) are CogVideoX-2B-shaped and are NOT the released model; the
  released ConsisID is fine-tuned from CogVideoX-5B-I2V, which the shape comments in diffusers'
  `consisid_transformer_3d.py` forward state (`[1, 13, 32, 60, 90]` in, 17,550 video tokens of width 3072,
  ID tokens `[.., 32, 2048]`). So the full ConsisID here is the same backbone as ours (48 x 64, 42 layers,
  in_channels 32, RoPE + learned positional embeddings) with the class's face defaults (LFE 1280/1024,
  depth 10, 32 queries -> 2048, cross-attention 16 x 128 every 2nd block);
- bare: diffusers' `CogVideoXTransformer3DModel` with the same backbone, no identity modules.

No weights are downloaded: timing and memory do not depend on the values.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import CogVideoXTransformer3DModel, ConsisIDTransformer3DModel
from torch import nn

from ingredients.models import IngredientsTransformer3DModel

MODEL_KINDS = ("ours", "consisid", "bare")


@dataclass(frozen=True)
class BenchSize:
    """Video size (pixels), backbone width/depth, text and face-feature shapes of one benchmark size."""

    frames: int
    height: int
    width: int
    heads: int
    head_dim: int
    layers: int
    text_tokens: int
    text_dim: int
    time_embed_dim: int
    vit_tokens: int
    ours_face: dict[str, Any] = field(default_factory=dict)
    consisid_face: dict[str, Any] = field(default_factory=dict)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent frames, latent height, latent width) after the VAE's 4x temporal, 8x spatial compression."""
        return (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8


SIZES: dict[str, BenchSize] = {
    # 49 x 480 x 720 -> latents 13 x 60 x 90 (17,550 video tokens), T5 226 x 4096, EVA-CLIP 577 tokens
    "full": BenchSize(49, 480, 720, 48, 64, 42, 226, 4096, 512, 577),
    # the same structure at a size the default CPU test suite affords: 9 x 64 x 64 -> 3 x 8 x 8 latents
    "reduced": BenchSize(
        9, 64, 64, 3, 32, 2, 16, 64, 32, 17,
        ours_face={
            "id_embed_dim": 48, "vit_dim": 32, "mapping_hidden_dim": 32, "extractor_dim": 32, "extractor_dim_head": 8,
            "extractor_heads": 4, "num_queries": 8, "id_token_dim": 64, "injector_dim_head": 16, "injector_heads": 4,
            "router_dim": 64,
        },
        consisid_face={
            # ConsisID's ID-token width is fixed at 2/3 of the transformer width (96 -> 64)
            "LFE_id_dim": 48, "LFE_vit_dim": 32, "LFE_dim_head": 8, "LFE_num_heads": 4, "LFE_num_querie": 8,
            "LFE_output_dim": 64, "cross_attn_dim_head": 16, "cross_attn_num_heads": 4,
        },
    ),
}


def backbone_config(size: BenchSize) -> dict[str, Any]:
    """CogVideoX image-to-video backbone arguments shared by the three models."""
    latent_frames, latent_height, latent_width = size.latent_shape
    return {
        "num_attention_heads": size.heads,
        "attention_head_dim": size.head_dim,
        "in_channels": 32,
        "out_channels": 16,
        "time_embed_dim": size.time_embed_dim,
        "text_embed_dim": size.text_dim,
        "num_layers": size.layers,
        "sample_width": latent_width,
        "sample_height": latent_height,
        "sample_frames": size.frames,
        "patch_size": 2,
        "temporal_compression_ratio": 4,
        "max_text_seq_length": size.text_tokens,
        "use_rotary_positional_embeddings": True,
        "use_learned_positional_embeddings": True,
    }


def model_config(kind: str, size: BenchSize, **ours_overrides: Any) -> dict[str, Any]:
    """Constructor arguments of `kind` ('ours', 'consisid' or 'bare'); `ours_overrides` change our config only."""
    config = backbone_config(size)
    if kind == "ours":
        return {**config, "cross_attn_interval": 2, **size.ours_face, **ours_overrides}
    if ours_overrides:
        raise ValueError(f"config overrides {sorted(ours_overrides)} apply to 'ours' only, not {kind!r}")
    if kind == "consisid":
        return {**config, "is_train_face": True, "is_kps": False, "cross_attn_interval": 2, **size.consisid_face}
    if kind == "bare":
        return config
    raise ValueError(f"unknown model kind {kind!r}; choose from {MODEL_KINDS}")


def model_class(kind: str) -> type[nn.Module]:
    classes = {"ours": IngredientsTransformer3DModel, "consisid": ConsisIDTransformer3DModel, "bare": CogVideoXTransformer3DModel}
    if kind not in classes:
        raise ValueError(f"unknown model kind {kind!r}; choose from {MODEL_KINDS}")
    return classes[kind]


def build_model(
    kind: str,
    size: BenchSize,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    **ours_overrides: Any,
) -> nn.Module:
    """A randomly initialised model of `kind`, built directly on `device`, cast to `dtype`, in eval mode."""
    config = model_config(kind, size, **ours_overrides)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        with torch.device(device):
            model = model_class(kind)(**config)
    finally:
        torch.random.set_rng_state(state)
    if dtype != torch.float32:  # built in float32
        model = model.to(dtype=dtype)
    return model.eval().requires_grad_(False)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def identity_feature_dims(size: BenchSize) -> tuple[int, int, int]:
    """(id_cond width, ViT width, ViT scales) that ours and ConsisID both take at this size."""
    defaults = inspect.signature(IngredientsTransformer3DModel.__init__).parameters
    ours = model_config("ours", size)
    dims = tuple(ours.get(k, defaults[k].default) for k in ("id_embed_dim", "vit_dim", "num_vit_scales"))
    consisid_defaults = inspect.signature(ConsisIDTransformer3DModel.__init__).parameters
    consisid = model_config("consisid", size)
    theirs = tuple(consisid.get(k, consisid_defaults[k].default) for k in ("LFE_id_dim", "LFE_vit_dim", "LFE_num_scale"))
    if dims != theirs:
        raise ValueError(f"size {size}: ours takes face features {dims}, ConsisID {theirs}; they must match to share inputs")
    return dims
