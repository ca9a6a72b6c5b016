"""The full-size Ingredients transformer without weights, for steps that cost nothing but seconds.

CogVideoX-5B-I2V's transformer config with the identity modules at the authors' sizes (6.4 B
parameters) is built on the meta device and materialised inside a `FakeTensorMode`: every
parameter and activation is a fake tensor (shape, dtype, device; no storage), so a training step or
a guided sampling step at 49 x 480 x 720 runs on a CPU and catches the shape, dtype and device bugs
that only full size shows. Fake tensors on device "cpu" take SDPA's CPU flash kernel, which, like the
GPU kernels, holds no N x N attention matrix.

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        model = fake_full_size_transformer()
        out = model(**full_size_inputs(model.config, batch=1, num_identities=2))
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

from ingredients.models.transformer_ingredients import IngredientsTransformer3DModel

# THUDM/CogVideoX-5b-I2V transformer/config.json (the backbone the authors fine-tuned)
COGVIDEOX_5B_I2V: dict[str, Any] = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 64,
    "dropout": 0.0,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 32,
    "max_text_seq_length": 226,
    "norm_elementwise_affine": True,
    "norm_eps": 1e-05,
    "num_attention_heads": 48,
    "num_layers": 42,
    "out_channels": 16,
    "patch_bias": True,
    "patch_size": 2,
    "sample_frames": 49,
    "sample_height": 60,
    "sample_width": 90,
    "spatial_interpolation_scale": 1.875,
    "temporal_compression_ratio": 4,
    "temporal_interpolation_scale": 1.0,
    "text_embed_dim": 4096,
    "time_embed_dim": 512,
    "timestep_activation_fn": "silu",
    "use_learned_positional_embeddings": True,
    "use_rotary_positional_embeddings": True,
}
# the identity modules at the reference's hard-coded sizes (antelopev2 512 + EVA-CLIP 768 = 1280-d
# identity vector; EVA02-CLIP-L-14-336 hidden states: 5 scales of 577 tokens x 1024)
IDENTITY_MODULES: dict[str, Any] = {
    "cross_attn_interval": 2,
    "id_embed_dim": 1280,
    "vit_dim": 1024,
    "num_vit_scales": 5,
    "mapping_hidden_dim": 1024,
    "extractor_dim": 1024,
    "extractor_depth": 10,
    "extractor_dim_head": 64,
    "extractor_heads": 16,
    "extractor_ff_mult": 4,
    "num_id_tokens": 5,
    "num_queries": 32,
    "id_token_dim": 2048,
    "injector_dim_head": 128,
    "injector_heads": 16,
    "router_dim": 2048,
}
FACE_VIT_TOKENS = 577  # EVA02-CLIP-L-14-336: (336 / 14)^2 patches + the class token
VAE_SPATIAL = 8  # CogVideoX VAE: 8 x spatial, 4 x temporal compression, 16 latent channels
VAE_TEMPORAL = 4
LATENT_CHANNELS = 16


def full_size_config(**overrides: Any) -> dict[str, Any]:
    """Constructor kwargs of the full-size transformer; `overrides` replace any key."""
    return {**COGVIDEOX_5B_I2V, **IDENTITY_MODULES, **overrides}


def meta_transformer(**overrides: Any) -> IngredientsTransformer3DModel:
    """The full-size transformer on the meta device (shapes only, built in about a second)."""
    with torch.device("meta"):
        return IngredientsTransformer3DModel(**full_size_config(**overrides))


def fake_full_size_transformer(
    dtype: torch.dtype = torch.float32, device: str = "cpu", adapt: Callable[[torch.nn.Module], Any] | None = None,
    **overrides: Any,
) -> IngredientsTransformer3DModel:
    """The full-size transformer with fake parameters on `device`; call inside an active FakeTensorMode.

    Built on the meta device, then every parameter and buffer is materialised as a fake tensor (no
    storage). `dtype` casts the whole model; cast parts afterwards as a trainer would. `adapt` changes
    the meta model first, e.g. injects LoRA adapters (peft cannot add them to a fake model: it moves
    them with `Module.to`, which refuses to swap fake parameters).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    if not any(isinstance(m, FakeTensorMode) for m in _get_current_dispatch_mode_stack()):
        raise RuntimeError("fake_full_size_transformer needs an active FakeTensorMode: it would allocate 25 GB of real weights")
    model = meta_transformer(**overrides)
    if adapt is not None:
        with torch.device("meta"):
            adapt(model)
    materialize(model, device, dtype)
    return model


def materialize(model: torch.nn.Module, device: str = "cpu", dtype: torch.dtype | None = None) -> None:
    """Replace every meta parameter and buffer of `model` by an empty tensor on `device` (fake inside a
    FakeTensorMode), floating ones cast to `dtype`.

    What `to_empty` does, by replacement rather than by swapping tensors in place (`to_empty` refuses
    to swap a meta parameter for a fake one when a weak reference to it exists).
    """
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                module._parameters[name] = torch.nn.Parameter(_empty_like(param, device, dtype), param.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = _empty_like(buffer, device, dtype)


def _empty_like(t: torch.Tensor, device: str, dtype: torch.dtype | None) -> torch.Tensor:
    return torch.empty_like(t, device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)


def rotary_embedding(
    config, height: int, width: int, latent_frames: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """3-D RoPE (cos, sin) [latent_frames * h/p * w/p, head_dim] for a height x width video, as the pipeline makes it."""
    unit = VAE_SPATIAL * config.patch_size
    grid = (height // unit, width // unit)
    base = (config.sample_width * VAE_SPATIAL // unit, config.sample_height * VAE_SPATIAL // unit)
    crops = get_resize_crop_region_for_grid(grid, *base)
    return get_3d_rotary_pos_embed(embed_dim=config.attention_head_dim, crops_coords=crops, grid_size=grid,
                                   temporal_size=latent_frames, device=device)


def full_size_inputs(
    config,
    batch: int,
    num_identities: int,
    num_frames: int = 49,
    height: int = 480,
    width: int = 720,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    text_tokens: int | None = None,
    vit_tokens: int = FACE_VIT_TOKENS,
) -> dict[str, Any]:
    """Model keyword arguments of one step at a video size (fake tensors inside a FakeTensorMode).

    hidden_states [B, F_lat, 2C, h, w] (noisy ⊕ image latents), encoder_hidden_states [B, T, D_text],
    timestep [B], image_rotary_emb, id_cond [B, K, D_id], id_vit_hidden scales x [B, K, T_vit, D_vit],
    id_mask [B, K] (all True). For a routing loss add index_mask [B, N] (`index_mask_for`).
    """
    latent_frames = (num_frames - 1) // VAE_TEMPORAL + 1
    h, w = height // VAE_SPATIAL, width // VAE_SPATIAL
    text_tokens = text_tokens or config.max_text_seq_length
    inputs: dict[str, Any] = {
        "hidden_states": torch.randn(batch, latent_frames, config.in_channels, h, w, dtype=dtype, device=device),
        "encoder_hidden_states": torch.randn(batch, text_tokens, config.text_embed_dim, dtype=dtype, device=device),
        "timestep": torch.randint(0, 1000, (batch,), device=device),
        "id_cond": torch.randn(batch, num_identities, config.id_embed_dim, dtype=dtype, device=device),
        "id_vit_hidden": [torch.randn(batch, num_identities, vit_tokens, config.vit_dim, dtype=dtype, device=device)
                          for _ in range(config.num_vit_scales)],
        "id_mask": torch.ones(batch, num_identities, dtype=torch.bool, device=device),
    }
    if config.use_rotary_positional_embeddings:
        inputs["image_rotary_emb"] = rotary_embedding(config, height, width, latent_frames, device)
    return inputs


def video_tokens(config, num_frames: int = 49, height: int = 480, width: int = 720) -> int:
    """Video tokens N of one sample: latent frames x (h / p) x (w / p)."""
    unit = VAE_SPATIAL * config.patch_size
    return ((num_frames - 1) // VAE_TEMPORAL + 1) * (height // unit) * (width // unit)


def index_mask_for(config, batch: int, num_identities: int, device: torch.device | str = "cpu", **video: int) -> torch.Tensor:
    """Routing labels [B, N] in -1..K-1 (background or an identity per video token)."""
    n = video_tokens(config, **video)
    return torch.randint(-1, num_identities, (batch, n), device=device)


def guided_denoising_step(model: IngredientsTransformer3DModel, inputs: dict[str, Any], guidance_scale: float = 6.0) -> torch.Tensor:
    """One classifier-free-guided transformer step as the pipeline runs it: ID tokens encoded once
    (batch 1), the [negative, positive] batch of 2 through the transformer, the guided noise prediction.

    `inputs`: `full_size_inputs(..., batch=2)` (sample 0 stands for the negative prompt). Returns the
    guided prediction [1, F, C, h, w] in float32.
    """
    identities = model.encode_identities(inputs["id_cond"][:1], [v[:1] for v in inputs["id_vit_hidden"]],
                                         inputs["id_mask"][:1], batch_size=2)
    out = model(hidden_states=inputs["hidden_states"], encoder_hidden_states=inputs["encoder_hidden_states"],
                timestep=inputs["timestep"], image_rotary_emb=inputs.get("image_rotary_emb"),
                identities=identities, return_dict=True)
    uncond, text = out.sample.float().chunk(2)
    return uncond + guidance_scale * (text - uncond)
