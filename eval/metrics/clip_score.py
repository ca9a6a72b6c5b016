"""clip_score: text alignment, 100 x max(cosine(open_clip image embedding, text embedding), 0)
averaged over frames (torchmetrics' CLIPScore convention, computed with open_clip because
torchmetrics' CLIPScore only loads hub names).

Needs a local open_clip checkpoint configured in eval.clip (model name, optional model config
JSON, weights file); without one the metric is reported missing. Weights are loaded from
safetensors or torch.load(weights_only=True) (`read_weights`); nothing is downloaded.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eval.context import VideoContext
from eval.params import ClipParams
from eval.registry import MetricResult, MetricUnavailable, register
from ingredients.files.weights_file import read_weights

logger = logging.getLogger(__name__)

NO_WEIGHTS = "no CLIP weights configured (set eval.clip.model and eval.clip.weights to a local open_clip checkpoint)"


@functools.lru_cache(maxsize=2)
def load_clip(model_name: str, config: str | None, weights: str) -> tuple:
    """(model, preprocess, tokenizer) for a local open_clip checkpoint."""
    import open_clip

    if config is not None:
        cfg = Path(config)
        if not cfg.is_file():
            raise MetricUnavailable(f"open_clip model config not found: {cfg} (eval.clip.config)")
        if cfg.stem != model_name:
            raise MetricUnavailable(f"eval.clip.config {cfg} registers model {cfg.stem!r}, but eval.clip.model is {model_name!r}")
        open_clip.add_model_config(cfg)
    if model_name not in open_clip.list_models():
        raise MetricUnavailable(f"unknown open_clip model {model_name!r} (eval.clip.model); give eval.clip.config for a custom one")
    path = Path(weights)
    if not path.is_file():
        raise MetricUnavailable(f"CLIP weights file not found: {path} (eval.clip.weights)")
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
    state = read_weights(path)
    state = state.get("state_dict", state)
    model.load_state_dict(state)
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)


@torch.no_grad()
def clip_score(model: torch.nn.Module, preprocess, tokenizer, frames: np.ndarray, prompt: str,
               batch_size: int = 16) -> float:
    """Mean over frames of 100 x max(cos(image, text), 0)."""
    text = model.encode_text(tokenizer([prompt]))
    text = text / text.norm(dim=-1, keepdim=True)  # [1, E]
    scores = []
    for start in range(0, len(frames), batch_size):
        batch = torch.stack([preprocess(Image.fromarray(f)) for f in frames[start:start + batch_size]])
        img = model.encode_image(batch)
        img = img / img.norm(dim=-1, keepdim=True)  # [B, E]
        scores.append((100.0 * (img @ text.T)[:, 0]).clamp(min=0))
    return float(torch.cat(scores).mean())


@register("clip_score")
def compute(ctx: VideoContext) -> MetricResult:
    cfg: ClipParams = ctx.params.clip
    if cfg.weights is None or cfg.model is None:
        raise MetricUnavailable(NO_WEIGHTS)
    model, preprocess, tokenizer = load_clip(cfg.model, cfg.config, cfg.weights)
    return MetricResult(values={"clip_score": clip_score(model, preprocess, tokenizer, ctx.frames, ctx.case.prompt, cfg.batch_size)})
