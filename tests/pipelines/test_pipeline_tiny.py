"""IngredientsPipeline end to end on the tiny model: determinism, expected values, switches, inputs."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from ingredients.model_folder.folder import load_pipeline
from ingredients.model_folder.tiny import build_tiny_pipeline

PROMPT = "two people talking in a car"
EXPECTED_LATENT_SLICE = [
    -0.1747196912765503, -0.6021164655685425, 0.364422470331192, -0.4885092079639435,
    -0.7194052934646606, -1.6730871200561523, -0.11946002393960953, -0.5603839159011841,
]  # fmt: skip


@pytest.fixture(scope="module")
def pipe():
    p = build_tiny_pipeline(0)
    p.set_progress_bar_config(disable=True)
    return p


def _identities(k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, k, 160, generator=g), [torch.randn(1, k, 65, 64, generator=g) for _ in range(5)]


def _canvas():
    return PIL.Image.fromarray((np.arange(128 * 128 * 3).reshape(128, 128, 3) % 251).astype(np.uint8))


def _run(pipe, k=2, output_type="latent", seed=42, steps=3, **kwargs):
    id_cond, id_vit = _identities(k)
    kwargs.setdefault("image", _canvas())
    return pipe(
        prompt=PROMPT,
        id_cond=id_cond,
        id_vit_hidden=id_vit,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type=output_type,
        **kwargs,
    ).frames


def test_expected_latent_slice_and_determinism(pipe):
    out = _run(pipe)
    assert out.shape == (1, 3, 4, 16, 16)
    torch.testing.assert_close(out[0, -1, 0, :2, :4].flatten(), torch.tensor(EXPECTED_LATENT_SLICE), rtol=0, atol=1e-4)
    torch.testing.assert_close(_run(pipe), out, rtol=0, atol=0)
    assert (_run(pipe, seed=43) - out).abs().max() > 0.1


# One denoising step where only the decode path is under test (suite time; measured 22 s per output type
# and 106 s for the switches at 3 steps, loaded): the denoising loop's values over 3 steps are held by
# test_expected_latent_slice_and_determinism, and the identities' effect by the tests below.
@pytest.mark.parametrize("output_type", ["np", "pil", "pt"])
def test_output_types(pipe, output_type):
    video = _run(pipe, output_type=output_type, steps=1)
    if output_type == "np":
        assert video.shape == (1, 9, 128, 128, 3) and 0 <= video.min() and video.max() <= 1
    elif output_type == "pil":
        assert len(video[0]) == 9 and video[0][0].size == (128, 128)
    else:
        assert video.shape == (1, 9, 3, 128, 128)


def test_memory_switches_match(pipe):
    """VAE slicing and tiling, and CPU offload, against the plain decode (one denoising step: see above)."""
    reference = _run(pipe, output_type="np", steps=1)
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_overlap_factor_height=0.25, tile_overlap_factor_width=0.25)
    try:
        tiled = _run(pipe, output_type="np", steps=1)
    finally:
        pipe.vae.disable_tiling()
        pipe.vae.disable_slicing()
    # tiling blends overlapping tiles: close to, not identical with, the untiled decode
    assert np.abs(tiled - reference).mean() < 0.05
    pipe.enable_model_cpu_offload(device="cpu")
    try:
        offloaded = _run(pipe, output_type="np", steps=1)
    finally:
        pipe.remove_all_hooks()
    np.testing.assert_allclose(offloaded, reference, rtol=0, atol=1e-5)


def _generate(pipe, id_cond, id_vit, **kwargs):
    return pipe(prompt=PROMPT, image=_canvas(), id_cond=id_cond, id_vit_hidden=id_vit, num_inference_steps=3,
                generator=torch.Generator().manual_seed(42), output_type="latent", **kwargs)


# identity order is not meaningful (soft routing and the sum over identities are symmetric in K), so
# a permutation only reorders float sums: measured <= 6e-6 on latents of magnitude ~1
PERMUTATION_ATOL = 1e-5
# new reference features for one identity move the latents by >= 0.037 (max) here; 0.01 is 1,000x the
# permutation noise, so "changed" cannot be round-off
CHANGE_MIN = 1e-2


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_any_number_of_identities(pipe, k):
    """K = 1..4: the video depends on every identity, and not on their order.

    Each identity in turn gets other reference features (id_cond and every ViT scale): the latents
    change by more than CHANGE_MIN. Permuting the identities (features together, canvas and everything
    else held fixed) gives the same latents within PERMUTATION_ATOL, and the routing logits permute with them.
    """
    id_cond, id_vit = _identities(k)
    base = _generate(pipe, id_cond, id_vit, return_routing_logits=True)
    assert base.frames.shape == (1, 3, 4, 16, 16) and torch.isfinite(base.frames).all()
    assert [z.shape for z in base.routing_logits] == [(1, 192, k)] * 4  # 192 video tokens, 4 injection points

    other_cond, other_vit = _identities(k, seed=99)
    for j in range(k):
        cond = id_cond.clone()
        cond[:, j] = other_cond[:, j]
        vit = [v.clone() for v in id_vit]
        for v, o in zip(vit, other_vit):
            v[:, j] = o[:, j]
        changed = _generate(pipe, cond, vit).frames
        assert (changed - base.frames).abs().max() > CHANGE_MIN, f"identity {j} of {k} does not change the video"

    if k > 1:
        perm = torch.roll(torch.arange(k), 1)  # moves every identity
        permuted = _generate(pipe, id_cond[:, perm], [v[:, perm] for v in id_vit], return_routing_logits=True)
        torch.testing.assert_close(permuted.frames, base.frames, rtol=0, atol=PERMUTATION_ATOL)
        for z_perm, z in zip(permuted.routing_logits, base.routing_logits):
            torch.testing.assert_close(z_perm, z[..., perm], rtol=0, atol=PERMUTATION_ATOL)


def test_identities_change_the_video(pipe):
    a = _run(pipe)
    id_cond, id_vit = _identities(2, seed=7)
    b = pipe(prompt=PROMPT, image=_canvas(), id_cond=id_cond, id_vit_hidden=id_vit, num_inference_steps=3,
             generator=torch.Generator().manual_seed(42), output_type="latent").frames
    assert (a - b).abs().mean() > 1e-3


def test_save_and_load_roundtrip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = load_pipeline(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(loaded), _run(pipe), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 120}, "multiples of 16"),
        ({"height": 256, "width": 256}, "learned positional embeddings for 128x128"),
        ({"num_frames": 10}, r"num_frames must be 1 \+ a multiple of 4 \(e.g. 49\), got 10"),
        ({"num_inference_steps": 0}, "num_inference_steps must be >= 1"),
        ({"output_type": "gif"}, "output_type must be one of"),
        ({"image": None}, "reference canvas"),
    ],
)
def test_check_inputs_names_the_bad_value(pipe, kwargs, message):
    id_cond, id_vit = _identities(2)
    call = dict(prompt=PROMPT, image=_canvas(), id_cond=id_cond, id_vit_hidden=id_vit, num_inference_steps=2)
    call.update(kwargs)
    with pytest.raises(ValueError, match=message):
        pipe(**call)


def test_check_inputs_identity_counts(pipe):
    with pytest.raises(ValueError, match="no identities"):
        pipe(prompt=PROMPT, image=_canvas(), num_inference_steps=2)
    id_cond, id_vit = _identities(9)
    with pytest.raises(ValueError, match="at most max_identities=8"):
        pipe(prompt=PROMPT, image=_canvas(), id_cond=id_cond, id_vit_hidden=id_vit, num_inference_steps=2)
    with pytest.raises(ValueError, match="prompt` is empty"):
        pipe(prompt="  ", image=_canvas(), id_cond=id_cond[:, :2], id_vit_hidden=[v[:, :2] for v in id_vit])


def test_prompt_longer_than_the_text_encoder_takes_is_warned(pipe):
    """Truncation is reported (diffusers' warning, naming the dropped words), never silent."""
    import logging
    import re

    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append
    logger = logging.getLogger("diffusers")  # diffusers' loggers stop propagating here
    logger.addHandler(handler)
    id_cond, id_vit = _identities(2)
    call = dict(image=_canvas(), id_cond=id_cond, id_vit_hidden=id_vit, num_inference_steps=1, output_type="latent")
    try:
        pipe(prompt=PROMPT, **call)
        assert [r for r in seen if "truncated" in r.getMessage()] == []
        limit = pipe.transformer.config.max_text_seq_length
        pipe(prompt=" ".join(f"word{i}" for i in range(2 * limit)) + " lastword", **call)
    finally:
        logger.removeHandler(handler)
    warned = [r.getMessage() for r in seen if "truncated" in r.getMessage()]
    assert len(warned) == 1 and re.search(rf"set to\s+{limit} tokens", warned[0]) and "lastword" in warned[0]
