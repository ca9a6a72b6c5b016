"""Model folders: a diffusers pipeline folder plus `face_encoder/`, for both profiles.

Layout (the authors' released folder is accepted as it is):
    model_index.json, transformer/ (or transformer_ema/), vae/, text_encoder/, tokenizer/, scheduler/
    face_encoder/face_settings.json   settings for the face stack (paths relative to face_encoder/);
                                      absent in the authors' release, where the reference's setup is
                                      assumed: insightface antelopev2 + EVA02-CLIP-L-14-336
The transformer may be ours (`_class_name` IngredientsTransformer3DModel) or the reference's format.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import torch

from ingredients.files.atomic import write_json
from ingredients.faces.eva_clip import build_tiny_clip, save_tiny_clip
from ingredients.faces.reference import FaceConditioner, build_face_conditioner
from ingredients.models import IngredientsTransformer3DModel, load_reference_transformer
from ingredients.pipelines import IngredientsPipeline
from ingredients.model_folder.tiny import TINY_HEIGHT, TINY_WIDTH, save_tiny_pipeline

logger = logging.getLogger(__name__)

FACE_SETTINGS_FILE = "face_settings.json"
# the reference's face setup, used when a released folder has no face_settings.json
RELEASED_FACE_SETTINGS: dict[str, Any] = {
    "backend": "insightface",
    "model_dir": "models/antelopev2",
    "clip": "full",
    "clip_dir": "EVA02_CLIP_L_336_psz14_s6B.pt",
    "id_vector": "raw",
    "canvas_width": 720,
    "canvas_height": 480,
}
TINY_FACE_SETTINGS: dict[str, Any] = {
    "backend": "dlib",
    "clip": "tiny",
    "clip_dir": "tiny_clip",
    "crop_size": 128,
    "canvas_width": TINY_WIDTH,
    "canvas_height": TINY_HEIGHT,
    "min_face_size": 40.0,
}


def prepare_tiny_folder(
    folder: str | Path, seed: int = 0, face_settings: Mapping[str, Any] | None = None,
    vae: Mapping[str, Any] | None = None, **transformer_overrides: Any
) -> Path:
    """Build and save the tiny profile's model folder (pipeline + tiny CLIP + face settings), offline.

    `face_settings` (params' `faces:` section) replace the tiny defaults key by key; `vae` (params'
    `prepare.vae`) replaces tiny VAE config keys.
    """
    folder = Path(folder)
    save_tiny_pipeline(folder, seed, dict(vae or {}), **transformer_overrides)
    save_tiny_clip(build_tiny_clip(seed), folder / "face_encoder" / "tiny_clip")
    write_json(folder / "face_encoder" / FACE_SETTINGS_FILE, {**TINY_FACE_SETTINGS, **dict(face_settings or {})})
    return folder


def _load_transformer(folder: Path) -> IngredientsTransformer3DModel:
    for name in ("transformer", "transformer_ema"):
        sub = folder / name
        if (sub / "config.json").is_file():
            config = json.loads((sub / "config.json").read_text())
            if config.get("_class_name") == IngredientsTransformer3DModel.__name__:
                return IngredientsTransformer3DModel.from_pretrained(sub, local_files_only=True)
            logger.info("loading %s in the reference's checkpoint format", sub)
            return load_reference_transformer(sub)
    raise FileNotFoundError(f"{folder}/transformer/config.json is missing: the model folder has no transformer")


def load_pipeline(folder: str | Path, torch_dtype: torch.dtype = torch.float32) -> IngredientsPipeline:
    """Load an IngredientsPipeline from a model folder, offline.

    Components other than the transformer are loaded with the classes model_index.json names
    (diffusers or transformers); diffusers' own loader cannot import classes from other packages.
    """
    import diffusers
    import transformers

    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{index_path} is missing: not a model folder (build the tiny one with `ingredients prepare --out {folder}`)"
        )
    index = json.loads(index_path.read_text())
    libraries = {"diffusers": diffusers, "transformers": transformers}
    components: dict[str, Any] = {}
    for name in ("tokenizer", "text_encoder", "vae", "scheduler"):
        library, class_name = index.get(name) or (None, None)
        if library is None:
            components[name] = None
            continue
        if library not in libraries:
            raise ValueError(f"{index_path}: component {name} comes from unsupported library {library!r}")
        sub = folder / name
        if not sub.is_dir():
            raise FileNotFoundError(f"{sub} is missing (named in {index_path})")
        components[name] = getattr(libraries[library], class_name).from_pretrained(sub, local_files_only=True)
    components["transformer"] = _load_transformer(folder)
    extra = {k: index[k] for k in ("rotary_base_height", "rotary_base_width") if k in index}
    pipe = IngredientsPipeline(**components, **extra)
    for module in (pipe.text_encoder, pipe.vae, pipe.transformer):
        if module is not None:
            module.eval()
            if torch_dtype != torch.float32:
                module.to(dtype=torch_dtype)
    return pipe


def face_settings(folder: str | Path, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The folder's face settings with paths made absolute (released folders: the reference's setup)."""
    face_dir = Path(folder) / "face_encoder"
    path = face_dir / FACE_SETTINGS_FILE
    settings = json.loads(path.read_text()) if path.is_file() else dict(RELEASED_FACE_SETTINGS)
    for key in ("model_dir", "clip_dir"):
        if settings.get(key) is not None and not Path(settings[key]).is_absolute():
            settings[key] = str(face_dir / settings[key])
    if cache_dir is not None:
        settings["cache_dir"] = str(cache_dir)
    return settings


def load_face_conditioner(folder: str | Path, pipe: IngredientsPipeline | None = None,
                          cache_dir: str | Path | None = None) -> FaceConditioner:
    """The face stack the folder was made with; checked against the transformer's identity widths."""
    conditioner = build_face_conditioner(face_settings(folder, cache_dir))
    if pipe is not None:
        cfg = pipe.transformer.config
        if (conditioner.id_embed_dim, conditioner.vit_dim) != (cfg.id_embed_dim, cfg.vit_dim):
            raise ValueError(
                f"face stack gives id_cond width {conditioner.id_embed_dim} and ViT width {conditioner.vit_dim}, "
                f"the transformer expects id_embed_dim={cfg.id_embed_dim} and vit_dim={cfg.vit_dim}: "
                f"check {Path(folder) / 'face_encoder' / FACE_SETTINGS_FILE}"
            )
    return conditioner
