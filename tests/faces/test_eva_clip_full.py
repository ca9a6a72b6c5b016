"""The full EVA02-L-14-336 tower (random weights, ~1.7 GB): both checkpoint formats load and hook right.

Slow (builds the 428M-parameter model and writes its checkpoints): run with `-m slow`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

# timm trunk name -> original EVA-CLIP name (the inverse of the converter's renames)
_TO_ORIGINAL = [("attn.q_proj.bias", "attn.q_bias"), ("attn.v_proj.bias", "attn.v_bias"),
                ("attn.norm.", "attn.inner_attn_ln."), ("mlp.fc1_g.", "mlp.w1."), ("mlp.fc1_x.", "mlp.w2."),
                ("mlp.fc2.", "mlp.w3."), ("mlp.norm.", "mlp.ffn_ln.")]


@pytest.fixture(scope="module")
def reference_model():
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model("EVA02-L-14-336", pretrained=None).eval()


def _crops() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[60:396, 100:436])[None]  # [1, 336, 336, 3]


def _check(encoder, reference_model):
    from ingredients.faces.eva_clip import CLIP_MEAN, CLIP_STD

    assert (encoder.image_size, encoder.width, encoder.embed_dim, encoder.num_tokens) == (336, 1024, 768, 577)
    features = encoder.encode(_crops())
    assert features.pooled.shape == (1, 768)
    assert [tuple(h.shape) for h in features.hidden] == [(1, 577, 1024)] * 5
    pixels = torch.from_numpy(_crops()).permute(0, 3, 1, 2).float() / 255  # [1, 336, 336, 3] -> [1, 3, 336, 336]
    pixels = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference_model.encode_image(pixels), dim=-1)
        ref = reference_model.visual.trunk.forward_intermediates(pixels, indices=[3, 7, 11, 15, 19],
                                                                 output_fmt="NLC", intermediates_only=True)
    torch.testing.assert_close(features.pooled, expected, atol=1e-4, rtol=1e-4)
    # hooked input of block 4i == timm's output of block 4i - 1 (patch tokens; timm drops the class token)
    assert len(ref) == 5
    for got, want in zip(features.hidden, ref):
        torch.testing.assert_close(got[:, 1:], want, atol=1e-4, rtol=1e-4)


def test_open_clip_format(reference_model, tmp_path):
    from safetensors.torch import save_file

    from ingredients.faces.eva_clip import load_full_clip

    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference_model.state_dict().items()}, str(path))
    _check(load_full_clip(tmp_path), reference_model)


def test_original_eva_format(reference_model, tmp_path):
    from ingredients.faces.eva_clip import EVA_ORIGINAL_FILE, load_full_clip

    state = {}
    for key, value in reference_model.visual.trunk.state_dict().items():
        for ours, theirs in _TO_ORIGINAL:
            key = key.replace(ours, theirs)
        state["visual." + key] = value.clone()
    state["logit_scale"] = torch.tensor(4.6)
    torch.save(state, tmp_path / EVA_ORIGINAL_FILE)
    _check(load_full_clip(tmp_path / EVA_ORIGINAL_FILE), reference_model)
