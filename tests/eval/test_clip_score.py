"""clip_score: missing without weights; with a local (tiny, untrained) open_clip checkpoint it
equals the score computed by hand with the same model."""

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from eval.metrics.clip_score import NO_WEIGHTS, clip_score, compute, load_clip
from eval.params import ClipParams, EvalParams
from eval.registry import MetricUnavailable

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


class Ctx:
    """The part of VideoContext clip_score reads."""

    def __init__(self, params, frames, prompt):
        self.params = params
        self.frames = frames
        self.case = type("C", (), {"prompt": prompt})()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    config = root / "tiny-eval-clip.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-eval-clip", pretrained=None)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return ClipParams(model="tiny-eval-clip", config=str(config), weights=str(weights))


def test_missing_without_weights_or_with_a_missing_file(tmp_path):
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(MetricUnavailable, match="no CLIP weights configured"):
        compute(Ctx(EvalParams(), frames, "a cat"))
    assert "no CLIP weights configured" in NO_WEIGHTS
    params = EvalParams(clip=ClipParams(model="ViT-B-32", weights=str(tmp_path / "nope.safetensors")))
    with pytest.raises(MetricUnavailable, match="nope.safetensors"):
        compute(Ctx(params, frames, "a cat"))


def test_score_equals_manual_computation(tiny_clip, photos):
    frames = np.stack([np.asarray(Image.fromarray(photos[n]).resize((64, 64))) for n in ("hanks", "grace", "astronaut")])
    result = compute(Ctx(EvalParams(clip=tiny_clip), frames, "a portrait photo of a person"))
    model, preprocess, tokenizer = load_clip(tiny_clip.model, tiny_clip.config, tiny_clip.weights)
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames]))
        txt = model.encode_text(tokenizer(["a portrait photo of a person"]))
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    expected = float((100 * cos).clamp(min=0).mean())
    assert expected > 0  # a real value, not the clamp
    assert result.values["clip_score"] == pytest.approx(expected, abs=1e-4)
    # batching does not change the value
    assert clip_score(model, preprocess, tokenizer, frames, "a portrait photo of a person", batch_size=1) == pytest.approx(expected, abs=1e-4)
