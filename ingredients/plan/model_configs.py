"""The configs of the models a profile runs, written in code so a plan needs no weights and no download.

Full profile: CogVideoX-5B-I2V's transformer (IngredientsTransformer3DModel's defaults are its
config, plus the identity modules), its VAE (diffusers AutoencoderKLCogVideoX, vae/config.json of
CogVideoX-5b-I2V) and its text encoder (transformers T5EncoderModel, google/t5-v1_1-xxl, as in
text_encoder/config.json). Tiny profile: the tiny model's configs (`model_folder.tiny`) and the
MiniLM text encoder's config shipped in its package. `prepare.transformer` overrides apply to both.
When `prepare.full.backbone` holds the configs (downloaded, or the rehearsal tree), the full profile's
plan reads them instead: the plan is of the model the study builds.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ingredients.faces.eva_clip import FULL_SCALE_BLOCKS
from ingredients.model_folder.tiny import TINY_FRAMES, TINY_HEIGHT, TINY_WIDTH, text_encoder_folder, tiny_transformer_config, tiny_vae_config

# CogVideoX-5b-I2V vae/config.json (diffusers AutoencoderKLCogVideoX)
FULL_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["CogVideoXDownBlock3D"] * 4,
    "up_block_types": ["CogVideoXUpBlock3D"] * 4,
    "block_out_channels": [128, 256, 256, 512],
    "latent_channels": 16,
    "layers_per_block": 3,
    "act_fn": "silu",
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "temporal_compression_ratio": 4,
    "sample_height": 480,
    "sample_width": 720,
    "scaling_factor": 0.7,
    "force_upcast": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "invert_scale_latents": True,
}

# CogVideoX-5b-I2V text_encoder/config.json: T5 v1.1 XXL encoder (transformers T5EncoderModel)
FULL_T5_CONFIG: dict[str, Any] = {
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.1,
    "is_encoder_decoder": True,
    "tie_word_embeddings": False,
}

# EVA02-CLIP-L-14-336 hidden states: (336 / 14)^2 patches + the class token; tiny CLIP: (64 / 8)^2 + 1
FULL_VIT_TOKENS = 577
TINY_VIT_TOKENS = 65


def backbone_folder(prepare: dict[str, Any]) -> Path | None:
    """`prepare.full.backbone` when its transformer, VAE and text encoder configs are there: the plan is
    then of the model the study will build (the real folder, or the rehearsal tree's), else None."""
    folder = (prepare.get("full") or {}).get("backbone")
    if folder is None:
        return None
    folder = Path(folder)
    names = ("transformer", "vae", "text_encoder")
    return folder if all((folder / name / "config.json").is_file() for name in names) else None


def _config_for(folder: Path, cls_name: str) -> dict[str, Any]:
    """A diffusers config.json, restricted to the keys the class takes (drops `_class_name` and the like)."""
    if cls_name == "IngredientsTransformer3DModel":
        from ingredients.models import IngredientsTransformer3DModel as cls
    else:
        from diffusers import AutoencoderKLCogVideoX as cls
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k in allowed}


@dataclass(frozen=True)
class ProfileModels:
    """What one profile builds: configs, the text encoder's class ('t5' or 'bert'), default video size."""

    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder_kind: str
    text_encoder: dict[str, Any]
    vit_tokens: int
    num_frames: int
    height: int
    width: int
    tokenizer: Path | None = None  # the backbone folder's tokenizer, when the configs come from one


def input_vit_scales(transformer: dict[str, Any]) -> int:
    """How many ViT scales `id_vit_hidden` carries into the transformer: all the face stack's
    (len(FULL_SCALE_BLOCKS)) when the model picks some of them (`vit_scale_indices`, e.g. the
    single-scale ablation), else the `num_vit_scales` it takes whole."""
    if transformer.get("vit_scale_indices") is not None:
        return len(FULL_SCALE_BLOCKS)
    return int(transformer.get("num_vit_scales", 0))


def profile_models(prepare: dict[str, Any]) -> ProfileModels:
    """The models of the params' `prepare:` section (profile tiny or full, transformer overrides)."""
    profile = prepare.get("profile", "tiny")
    overrides = dict(prepare.get("transformer") or {})
    if profile == "full":
        folder = backbone_folder(prepare)
        if folder is None:  # planning before the download: CogVideoX-5B-I2V's configs, written above
            return ProfileModels(transformer=overrides, vae=dict(FULL_VAE_CONFIG), text_encoder_kind="t5",
                                 text_encoder=dict(FULL_T5_CONFIG), vit_tokens=FULL_VIT_TOKENS,
                                 num_frames=49, height=480, width=720)
        return ProfileModels(transformer={**_config_for(folder / "transformer", "IngredientsTransformer3DModel"), **overrides},
                             vae=_config_for(folder / "vae", "AutoencoderKLCogVideoX"), text_encoder_kind="t5",
                             text_encoder=json.loads((folder / "text_encoder" / "config.json").read_text()),
                             vit_tokens=FULL_VIT_TOKENS, num_frames=49, height=480, width=720,
                             tokenizer=folder / "tokenizer" if (folder / "tokenizer").is_dir() else None)
    if profile != "tiny":
        raise ValueError(f"prepare.profile: {profile!r} is not a profile the plan knows (tiny, full)")
    bert = json.loads((text_encoder_folder() / "config.json").read_text())
    return ProfileModels(transformer=tiny_transformer_config(**overrides), vae=tiny_vae_config(), text_encoder_kind="bert",
                         text_encoder=bert, vit_tokens=TINY_VIT_TOKENS, num_frames=TINY_FRAMES, height=TINY_HEIGHT,
                         width=TINY_WIDTH)


def full_transformer_config(models: ProfileModels, backbone_only: bool) -> dict[str, Any]:
    """The transformer config: ours (defaults = CogVideoX-5B-I2V + identity modules, with overrides)
    or the bare backbone's keys only."""
    from diffusers import CogVideoXTransformer3DModel

    from ingredients.models import IngredientsTransformer3DModel

    defaults = {k: v.default for k, v in _signature(IngredientsTransformer3DModel).items() if k != "self"}
    config = {**defaults, **models.transformer}
    if backbone_only:
        bare = set(_signature(CogVideoXTransformer3DModel)) - {"self"}
        config = {k: v for k, v in config.items() if k in bare}
    return config


def _signature(cls) -> dict:
    return dict(inspect.signature(cls.__init__).parameters)


def build_text_encoder(models: ProfileModels) -> nn.Module:
    """The profile's text encoder on the meta device (T5 encoder or the tiny BERT)."""
    from ingredients.plan.fake_run import build_on_meta

    if models.text_encoder_kind == "t5":
        from transformers import T5Config, T5EncoderModel

        return build_on_meta(T5EncoderModel, T5Config(**models.text_encoder))
    from transformers import BertConfig, BertModel

    config = {k: v for k, v in models.text_encoder.items() if not k.startswith("_") and k != "architectures"}
    return build_on_meta(BertModel, BertConfig(**config), add_pooling_layer=False)
