"""EVA-CLIP features: the tiny tower, its save/load, the hooks, and the original-checkpoint converter."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ingredients.faces.eva_clip import (
    FULL_HUB_ID,
    FULL_SCALE_BLOCKS,
    build_clip,
    build_tiny_clip,
    checkpoint_format,
    convert_eva_original_visual,
    load_tiny_clip,
    resolve_full_clip_file,
    save_tiny_clip,
    scale_blocks_for_depth,
    to_gray,
)


def crops(n: int = 3, size: int = 112, seed: int = 0) -> np.ndarray:
    from skimage import data

    rng = np.random.default_rng(seed)
    image = data.astronaut()
    out = []
    for _ in range(n):
        y, x = rng.integers(0, image.shape[0] - size, 2)
        out.append(image[y:y + size, x:x + size])
    return np.stack(out)


def test_scale_blocks_follow_depth():
    assert scale_blocks_for_depth(24) == FULL_SCALE_BLOCKS == (4, 8, 12, 16, 20)
    assert scale_blocks_for_depth(12) == (2, 4, 6, 8, 10)
    with pytest.raises(ValueError, match="too shallow"):
        scale_blocks_for_depth(4)


def test_tiny_shapes_and_unit_embedding(tiny_clip):
    assert (tiny_clip.image_size, tiny_clip.width, tiny_clip.embed_dim, tiny_clip.num_tokens) == (64, 64, 32, 65)
    assert tiny_clip.scale_blocks == (2, 4, 6, 8, 10)
    assert len(tiny_clip.visual.transformer.resblocks) == 12
    assert tiny_clip.visual.transformer.resblocks[0].attn.num_heads == 4
    features = tiny_clip.encode(crops(3))
    assert features.pooled.shape == (3, 32)
    torch.testing.assert_close(features.pooled.norm(dim=-1), torch.ones(3))
    assert [tuple(h.shape) for h in features.hidden] == [(3, 65, 64)] * 5
    # distinct images give distinct features, hidden scales differ from each other
    assert not torch.allclose(features.pooled[0], features.pooled[1])
    assert not torch.allclose(features.hidden[0], features.hidden[4])


def test_hooks_capture_block_inputs(tiny_clip):
    """Input of block i == output of block i-1, from open_clip's own forward_intermediates."""
    pixels = tiny_clip.preprocess(crops(2))
    features = tiny_clip(pixels)
    with torch.no_grad():
        ref = tiny_clip.visual.forward_intermediates(pixels, indices=[b - 1 for b in tiny_clip.scale_blocks],
                                                     output_fmt="NLC", output_extra_tokens=True)
    for got, prefix, spatial in zip(features.hidden, ref["image_intermediates_prefix"], ref["image_intermediates"]):
        torch.testing.assert_close(got, torch.cat([prefix, spatial], dim=1))
    torch.testing.assert_close(features.pooled, F.normalize(ref["image_features"], dim=-1))


def test_tiny_is_deterministic_per_seed_and_says_untrained(caplog):
    with caplog.at_level(logging.WARNING, logger="ingredients.faces.eva_clip"):
        a, b, c = build_tiny_clip(0), build_tiny_clip(0), build_tiny_clip(1)
    assert "UNTRAINED" in caplog.text
    assert a.identity == b.identity and a.identity != c.identity
    x = crops(2)
    torch.testing.assert_close(a.encode(x).pooled, b.encode(x).pooled, rtol=0, atol=0)
    assert not torch.allclose(a.encode(x).pooled, c.encode(x).pooled)
    # building it does not disturb the global RNG
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_tiny_clip(3)
    torch.testing.assert_close(torch.rand(3), expected)


def test_save_load_roundtrip(tmp_path, tiny_clip):
    folder = save_tiny_clip(tiny_clip, tmp_path / "tiny_clip")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_tiny_clip(folder)
    assert loaded.identity == tiny_clip.identity
    x = crops(2)
    a, b = tiny_clip.encode(x), loaded.encode(x)
    torch.testing.assert_close(a.pooled, b.pooled, rtol=0, atol=0)
    for h1, h2 in zip(a.hidden, b.hidden):
        torch.testing.assert_close(h1, h2, rtol=0, atol=0)
    assert build_clip("tiny", folder).identity == tiny_clip.identity


def test_missing_tiny_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere/config\.json.*save_tiny_clip"):
        load_tiny_clip(tmp_path / "nothere")


def test_preprocess_resizes_normalises_and_grays(tiny_clip):
    x = crops(1, size=112)
    pixels = tiny_clip.preprocess(x)
    assert pixels.shape == (1, 3, 64, 64)
    white = tiny_clip.preprocess(np.full((1, 64, 64, 3), 255, np.uint8))
    expected = (1.0 - tiny_clip.mean) / tiny_clip.std  # [1, 3, 1, 1]
    torch.testing.assert_close(white, expected.expand(1, 3, 64, 64))
    rgb = torch.rand(2, 3, 8, 8)
    gray = to_gray(rgb)
    torch.testing.assert_close(gray[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    torch.testing.assert_close(gray[:, 0], gray[:, 2])
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        tiny_clip.preprocess(x[0])


def test_full_weights_missing_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        resolve_full_clip_file(tmp_path)
    message = str(info.value)
    assert "open_clip_model.safetensors" in message and "EVA02_CLIP_L_336_psz14_s6B.pt" in message
    assert FULL_HUB_ID in message
    with pytest.raises(FileNotFoundError, match=r"weights\.pt"):
        build_clip("full", tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="unknown clip kind 'huge'; valid kinds: full, tiny"):
        build_clip("huge")


# ------------------------------------------------------------------ original EVA-CLIP checkpoint format

W, HEADS, DEPTH, EMBED, IMG, PATCH = 32, 2, 3, 16, 28, 14
HID = int(W * 4 * 2 / 3)  # EVA02's SwiGLU width (mlp_ratio 8/3)
TOKENS = (IMG // PATCH) ** 2 + 1


def original_eva_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the EVA-CLIP repo's names (EVAVisionTransformer with subln + naiveswiglu)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.1):
        return torch.randn(shape, generator=gen) * scale

    sd = {"visual.patch_embed.proj.weight": r(W, 3, PATCH, PATCH), "visual.patch_embed.proj.bias": r(W),
          "visual.cls_token": r(1, 1, W), "visual.pos_embed": r(1, TOKENS, W),
          "visual.rope.freqs_cos": r(TOKENS - 1, W // HEADS), "visual.rope.freqs_sin": r(TOKENS - 1, W // HEADS),
          "visual.norm.weight": 1 + r(W), "visual.norm.bias": r(W),
          "visual.head.weight": r(EMBED, W), "visual.head.bias": r(EMBED),
          "text.token_embedding.weight": r(10, 8), "logit_scale": torch.tensor(4.6)}
    for i in range(DEPTH):
        p = f"visual.blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + r(W), p + "norm1.bias": r(W), p + "norm2.weight": 1 + r(W), p + "norm2.bias": r(W),
            p + "attn.q_proj.weight": r(W, W), p + "attn.k_proj.weight": r(W, W), p + "attn.v_proj.weight": r(W, W),
            p + "attn.q_bias": r(W), p + "attn.v_bias": r(W),
            p + "attn.inner_attn_ln.weight": 1 + r(W), p + "attn.inner_attn_ln.bias": r(W),
            p + "attn.proj.weight": r(W, W), p + "attn.proj.bias": r(W),
            p + "attn.rope.freqs_cos": r(TOKENS - 1, W // HEADS),
            p + "mlp.w1.weight": r(HID, W), p + "mlp.w1.bias": r(HID), p + "mlp.w2.weight": r(HID, W),
            p + "mlp.w2.bias": r(HID), p + "mlp.ffn_ln.weight": 1 + r(HID), p + "mlp.ffn_ln.bias": r(HID),
            p + "mlp.w3.weight": r(W, HID), p + "mlp.w3.bias": r(W),
        })
    return sd


def original_eva_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The EVA-CLIP repo's forward (no rotary embedding), written out: pooled head output, block inputs."""
    g = lambda k: sd["visual." + k]  # noqa: E731
    ln = lambda t, k: F.layer_norm(t, t.shape[-1:], g(k + ".weight"), g(k + ".bias"), eps=1e-6)  # noqa: E731
    t = F.conv2d(x, g("patch_embed.proj.weight"), g("patch_embed.proj.bias"), stride=PATCH)
    t = t.flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, h*w, C]
    t = torch.cat([g("cls_token").expand(t.shape[0], -1, -1), t], dim=1) + g("pos_embed")
    inputs = []
    for i in range(DEPTH):
        inputs.append(t)
        p = f"blocks.{i}."
        h = ln(t, p + "norm1")
        q = F.linear(h, g(p + "attn.q_proj.weight"), g(p + "attn.q_bias"))
        k = F.linear(h, g(p + "attn.k_proj.weight"))
        v = F.linear(h, g(p + "attn.v_proj.weight"), g(p + "attn.v_bias"))
        B, N, _ = q.shape
        q, k, v = (y.reshape(B, N, HEADS, -1).transpose(1, 2) for y in (q, k, v))  # [B, heads, N, hd]
        attn = ((q * (W // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        a = (attn @ v).transpose(1, 2).reshape(B, N, W)
        t = t + F.linear(ln(a, p + "attn.inner_attn_ln"), g(p + "attn.proj.weight"), g(p + "attn.proj.bias"))
        h = ln(t, p + "norm2")
        hidden = F.silu(F.linear(h, g(p + "mlp.w1.weight"), g(p + "mlp.w1.bias"))) * \
            F.linear(h, g(p + "mlp.w2.weight"), g(p + "mlp.w2.bias"))
        t = t + F.linear(ln(hidden, p + "mlp.ffn_ln"), g(p + "mlp.w3.weight"), g(p + "mlp.w3.bias"))
    pooled = ln(t, "norm")[:, 0]
    return F.linear(pooled, g("head.weight"), g("head.bias")), inputs


def test_original_eva_checkpoint_converts_to_timm_with_parity():
    import timm

    trunk = timm.create_model("eva02_large_patch14_clip_336", pretrained=False, img_size=IMG, patch_size=PATCH,
                              embed_dim=W, depth=DEPTH, num_heads=HEADS, num_classes=EMBED, use_rot_pos_emb=False)
    sd = original_eva_state_dict()
    assert checkpoint_format(sd) == "eva_original"
    converted = convert_eva_original_visual(sd, trunk)
    assert not any(k.startswith(("text", "logit")) or "rope" in k for k in converted)
    trunk.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    taken = []
    hooks = [blk.register_forward_pre_hook(lambda m, a: taken.append(a[0])) for blk in trunk.blocks]
    with torch.no_grad():
        got = trunk.eval()(x)
        expected, inputs = original_eva_forward(sd, x)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    for a, b in zip(taken, inputs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_checkpoint_format_detection():
    assert checkpoint_format({"visual.trunk.pos_embed": 0}) == "open_clip"
    with pytest.raises(ValueError, match="unrecognised EVA-CLIP checkpoint layout"):
        checkpoint_format({"conv1.weight": 0})
