"""Loading the authors' checkpoints: their config layouts mapped onto `IngredientsTransformer3DModel`.

Two layouts are understood:
- the parity fixture's: `{"backbone": {...CogVideoX args, cross_attn_interval}, "face": {...sizes},
  "local_face_scale": float}`;
- the released `transformer/config.json`: CogVideoX args plus `is_train_face`, `cross_attn_interval`,
  `LFE_num_tokens`, `LFE_output_dim`, `LFE_heads`, `local_face_scale`, `is_kps` (other face sizes
  are hard-coded in the reference and take our defaults).
Parameter names are the reference's own, so the state dict loads as it is.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from ingredients.models.transformer_ingredients import IngredientsTransformer3DModel

logger = logging.getLogger(__name__)

# fixture "face" keys that are our config keys under the same name
_FACE_KEYS = (
    "id_embed_dim", "vit_dim", "num_vit_scales", "mapping_hidden_dim", "extractor_dim", "extractor_depth",
    "extractor_dim_head", "extractor_heads", "extractor_ff_mult", "num_id_tokens", "num_queries",
    "id_token_dim", "injector_dim_head", "injector_heads", "router_dim",
)
# released config.json keys -> ours
_RELEASED_KEYS = {
    "cross_attn_interval": "cross_attn_interval",
    "LFE_num_tokens": "num_queries",
    "LFE_output_dim": "id_token_dim",
    "LFE_heads": "extractor_heads",
    "local_face_scale": "local_face_scale",
}
# keys of the released config that carry no architecture of ours
_IGNORED_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "is_train_face", "is_kps", "vit_tokens"}


def _backbone_keys() -> set[str]:
    params = inspect.signature(IngredientsTransformer3DModel.__init__).parameters
    return {name for name in params if name != "self"}


def config_from_reference(config: Mapping[str, Any]) -> dict[str, Any]:
    """A reference config (fixture layout or released config.json) -> our constructor kwargs."""
    ours = _backbone_keys()
    out: dict[str, Any] = {}
    if "backbone" in config:
        for key, value in config["backbone"].items():
            if key not in ours:
                raise ValueError(f"unknown backbone key {key!r} in reference config")
            out[key] = value
        for key, value in config.get("face", {}).items():
            if key in _FACE_KEYS:
                out[key] = value
            elif key not in _IGNORED_KEYS:
                raise ValueError(f"unknown face key {key!r} in reference config; known: {sorted(_FACE_KEYS)}")
        if "local_face_scale" in config:
            out["local_face_scale"] = config["local_face_scale"]
        return out
    if config.get("is_kps"):
        raise ValueError("is_kps=true (keypoint-conditioned checkpoints) is not supported")
    if config.get("is_train_face") is False:
        raise ValueError("is_train_face=false: this is a bare CogVideoX checkpoint, load it with CogVideoXTransformer3DModel")
    for key, value in config.items():
        if key in _RELEASED_KEYS:
            out[_RELEASED_KEYS[key]] = value
        elif key in ours:
            out[key] = value
        elif key not in _IGNORED_KEYS:
            logger.warning("ignoring unknown key %r in the reference config", key)
    return out


def from_reference(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> IngredientsTransformer3DModel:
    """Build our model from a reference config and load a reference-format state dict (strict)."""
    model = IngredientsTransformer3DModel(**config_from_reference(config))
    own = model.state_dict()
    converted = {k: v.to(own[k].dtype) if k in own else v for k, v in state_dict.items()}
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"reference state dict does not match the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return model.eval()


def load_reference_transformer(folder: str | Path) -> IngredientsTransformer3DModel:
    """Load a released reference `transformer/` folder: config.json + safetensors weights (sharded or not)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: a reference transformer folder needs its config.json")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"no *.safetensors weights in {folder}: download the released Ingredients transformer "
            "(its transformer/ folder) into it"
        )
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return from_reference(json.loads(config_path.read_text()), state)
