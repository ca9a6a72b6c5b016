"""clip_score: missing without weights; with a local (tiny, untrained) checkpoint it equals the
score computed independently by transformers' CLIPModel (the model torchmetrics' CLIPScore uses) on
the same weights, saved once with save_pretrained and once mapped to an open_clip state dict."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from eval.metrics.clip_score import NO_WEIGHTS, clip_score, compute, load_clip
from eval.params import ClipParams, EvalParams
from eval.registry import MetricUnavailable

# a tiny CLIP, different widths per tower so a mixed-up mapping cannot load
LAYERS, VISION_WIDTH, TEXT_WIDTH, EMBED_DIM, IMAGE_SIZE, PATCH = 2, 32, 48, 24, 32, 8
OPEN_CLIP_CONFIG = {
    "embed_dim": EMBED_DIM,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": LAYERS, "width": VISION_WIDTH, "head_width": 16, "patch_size": PATCH},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": TEXT_WIDTH, "heads": 3, "layers": LAYERS},
}
PROMPTS = ("a portrait photo of a person", "two people talking in a car")

class Ctx:
    """The part of VideoContext clip_score reads."""

    def __init__(self, params, frames, prompt):
        self.params = params
        self.frames = frames
        self.case = type("C", (), {"prompt": prompt})()


def _hf_config():
    from transformers import CLIPConfig

    # hidden_act "gelu" is open_clip's nn.GELU (its non-"quickgelu" models); eos_token_id 49407 pools
    # the text at the end-of-text token, as open_clip does (argmax of the ids)
    return CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=LAYERS,
            num_attention_heads=3, max_position_embeddings=77, hidden_act="gelu", bos_token_id=49406,
            eos_token_id=49407, pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=VISION_WIDTH, intermediate_size=4 * VISION_WIDTH, num_hidden_layers=LAYERS, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH, hidden_act="gelu",
        ),
        projection_dim=EMBED_DIM,
    )


def _encoder_to_open_clip(sd: dict, src: str, dst: str) -> dict:
    """transformers' CLIPEncoder layers -> open_clip's resblocks (q, k, v stacked into in_proj)."""
    out = {}
    for i in range(LAYERS):
        s, d = f"{src}.encoder.layers.{i}", f"{dst}.resblocks.{i}"
        out[f"{d}.attn.in_proj_weight"] = torch.cat([sd[f"{s}.self_attn.{p}_proj.weight"] for p in "qkv"])
        out[f"{d}.attn.in_proj_bias"] = torch.cat([sd[f"{s}.self_attn.{p}_proj.bias"] for p in "qkv"])
        pairs = [("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                 ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]
        for oc_name, hf_name in pairs:
            for w in ("weight", "bias"):
                out[f"{d}.{oc_name}.{w}"] = sd[f"{s}.{hf_name}.{w}"]
    return out


def hf_to_open_clip(sd: dict) -> dict:
    """A transformers CLIPModel state dict as an open_clip CLIP state dict (projections transposed)."""
    def ln(oc_name, hf_name):
        return {f"{oc_name}.weight": sd[f"{hf_name}.weight"], f"{oc_name}.bias": sd[f"{hf_name}.bias"]}

    return {
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        **ln("ln_final", "text_model.final_layer_norm"),
        "text_projection": sd["text_projection.weight"].T,
        "logit_scale": sd["logit_scale"],
        "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
        **ln("visual.ln_pre", "vision_model.pre_layrnorm"),
        **ln("visual.ln_post", "vision_model.post_layernorm"),
        "visual.proj": sd["visual_projection.weight"].T,
        **_encoder_to_open_clip(sd, "text_model", "transformer"),
        **_encoder_to_open_clip(sd, "vision_model", "visual.transformer"),
    }


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(ClipParams of the open_clip copy, folder of the transformers checkpoint) with the same weights."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPModel

    root = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    model = CLIPModel(_hf_config()).eval()
    with torch.no_grad():
        # untrained towers at this size embed every photo at a negative cosine to every prompt;
        # flipping the image projection makes the cosines positive, so the score is not the clamp's 0
        model.visual_projection.weight.neg_()
    hf_dir = root / "hf"
    model.save_pretrained(hf_dir)
    # the BPE vocabulary (OpenAI's, shipped with open_clip) in transformers' files, special tokens renamed
    bpe = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (hf_dir / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in bpe.encoder.items()}))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (hf_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")

    config = root / "tiny-hf-clip.json"
    config.write_text(json.dumps(OPEN_CLIP_CONFIG))
    weights = root / "tiny-open-clip.safetensors"
    state = hf_to_open_clip(load_file(str(hf_dir / "model.safetensors")))
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    return ClipParams(model="tiny-hf-clip", config=str(config), weights=str(weights)), hf_dir


def transformers_clip_score(hf_dir, frames: np.ndarray, prompt: str) -> tuple[float, torch.Tensor]:
    """Mean over frames of max(100 x cos, 0) by transformers alone (tokenizer, PIL image processor,
    CLIPModel); also the per-frame cosines."""
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = CLIPModel.from_pretrained(hf_dir).eval()
    tokens = CLIPTokenizer.from_pretrained(hf_dir)([prompt], return_tensors="pt")
    processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    pixels = processor(images=[Image.fromarray(f) for f in frames], return_tensors="pt").pixel_values
    with torch.no_grad():
        out = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels)
    cos = (out.image_embeds @ out.text_embeds.T)[:, 0]  # both L2-normalised by CLIPModel
    return float((100 * cos).clamp(min=0).mean()), cos


def test_missing_without_weights_or_with_a_missing_file(tmp_path):
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(MetricUnavailable, match="no CLIP weights configured"):
        compute(Ctx(EvalParams(), frames, "a cat"))
    assert "no CLIP weights configured" in NO_WEIGHTS
    params = EvalParams(clip=ClipParams(model="ViT-B-32", weights=str(tmp_path / "nope.safetensors")))
    with pytest.raises(MetricUnavailable, match="nope.safetensors"):
        compute(Ctx(params, frames, "a cat"))


@pytest.mark.parametrize("size", [(32, 32), (71, 45)])
def test_score_equals_transformers_clip(tiny_clip, photos, size):
    """Our metric (open_clip, our loader) = 100 x cosine from transformers' CLIPModel on the same
    weights, per prompt; (71, 45) frames go through the shortest-edge resize and the centre crop."""
    params, hf_dir = tiny_clip
    frames = np.stack([np.asarray(Image.fromarray(photos[n]).resize(size)) for n in ("hanks", "grace", "astronaut")])
    scores = []
    for prompt in PROMPTS:
        expected, cos = transformers_clip_score(hf_dir, frames, prompt)
        assert (cos > 0.01).all(), cos  # the clamp is not what is compared
        result = compute(Ctx(EvalParams(clip=params), frames, prompt))
        assert result.values["clip_score"] == pytest.approx(expected, abs=1e-4)
        # batching does not change the value
        model, preprocess, tokenizer = load_clip(params.model, params.config, params.weights)
        assert clip_score(model, preprocess, tokenizer, frames, prompt, batch_size=1) == pytest.approx(expected, abs=1e-4)
        scores.append(expected)
    assert abs(scores[0] - scores[1]) > 1e-2  # the prompt matters: the equality is not a constant
