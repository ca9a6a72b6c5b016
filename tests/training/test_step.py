"""The training step's pieces: the CogVideoX diffusion loss, the image condition built exactly as at
inference, per-sample randomness that does not depend on how a batch is split."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import CogVideoXDPMScheduler

from ingredients.model_folder.folder import load_pipeline
from ingredients.model_folder.tiny import SCHEDULER_CONFIG
from ingredients.training.clip_encoding import EncodedClip, canvas_latents, sample_video_latents
from ingredients.training.diffusion_loss import diffusion_loss, face_region_weights
from ingredients.training.sample_randomness import sample_generators, sample_seed
from ingredients.training.step import build_step_inputs, routing_hits


@pytest.fixture(scope="module")
def scheduler():
    return CogVideoXDPMScheduler(**SCHEDULER_CONFIG)


@pytest.fixture(scope="module")
def pipe(small_model):
    return load_pipeline(small_model)


def test_loss_is_zero_for_the_exact_velocity_and_matches_the_formula(scheduler):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 4, 8, 8, generator=g), torch.randn(3, 2, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    noisy = scheduler.add_noise(x0, noise, t)
    a = scheduler.alphas_cumprod[t].float().reshape(-1, 1, 1, 1, 1)
    v = a.sqrt() * noise - (1 - a).sqrt() * x0  # the v-prediction target
    assert diffusion_loss(scheduler, v, noisy, x0, t).abs().max() < 1e-4
    out = v + 0.1 * torch.randn(v.shape, generator=g)
    # by hand: pred_x0 = sqrt(a) noisy - sqrt(1-a) out; loss = mean(1/(1-a) (pred_x0 - x0)^2)
    pred_x0 = a.sqrt() * noisy - (1 - a).sqrt() * out
    expected = ((pred_x0 - x0) ** 2 / (1 - a)).flatten(1).mean(1)
    torch.testing.assert_close(diffusion_loss(scheduler, out, noisy, x0, t), expected, rtol=1e-5, atol=1e-6)
    # the SNR weight of the last step is 1 / (1 - 2^-24) (zero-terminal-SNR schedule, clamped)
    assert float(1 / (1 - scheduler.alphas_cumprod[999])) == pytest.approx(1.0, abs=1e-6)


def test_face_region_weights_follow_the_token_layout():
    # 2 latent frames, 8 x 8 latents, patch 2 -> 2 x 4 x 4 tokens
    index = torch.full((1, 32), -1)
    index[0, 5] = 0  # frame 0, token row 1, column 1
    index[0, 16 + 15] = 1  # frame 1, row 3, column 3
    w = face_region_weights(index, (2, 4, 8, 8), 2, face_weight=3.0)
    assert w.shape == (1, 2, 1, 8, 8)
    assert torch.equal(w[0, 0, 0, 2:4, 2:4], torch.full((2, 2), 4.0))
    assert torch.equal(w[0, 1, 0, 6:8, 6:8], torch.full((2, 2), 4.0))
    assert int((w == 4.0).sum()) == 8 and int((w == 1.0).sum()) == 2 * 64 - 8
    with pytest.raises(ValueError, match="index mask has 31 tokens"):
        face_region_weights(index[:, :31], (2, 4, 8, 8), 2, 1.0)


def test_face_weighting_shifts_the_loss_towards_faces(scheduler):
    x0 = torch.zeros(1, 2, 4, 8, 8)
    t = torch.tensor([999])
    noisy = scheduler.add_noise(x0, torch.zeros_like(x0), t)
    out = torch.zeros_like(x0)
    out[:, 0, :, :2, :2] = 1.0  # error only inside token 0 of frame 0
    index = torch.full((1, 32), -1)
    plain = diffusion_loss(scheduler, out, noisy, x0, t)
    uniform = diffusion_loss(scheduler, out, noisy, x0, t, face_region_weights(index, (2, 4, 8, 8), 2, 5.0))
    torch.testing.assert_close(uniform, plain)  # no face token: weighting changes nothing
    index[0, 0] = 0
    weighted = diffusion_loss(scheduler, out, noisy, x0, t, face_region_weights(index, (2, 4, 8, 8), 2, 5.0))
    # the error sits in the face: its weight 6 over a mean weight (6*16 + 496)/512
    assert float(weighted / plain) == pytest.approx(6 / ((6 * 16 + 496) / 512), rel=1e-5)


def test_image_condition_matches_the_pipeline(pipe):
    """canvas_latents from cached distributions == IngredientsPipeline.prepare_latents' image latents."""
    rng = np.random.default_rng(0)
    canvases = [PIL.Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
    image = pipe.video_processor.preprocess(canvases, height=64, width=64)  # [2, 3, 64, 64]
    _, expected = pipe.prepare_latents(image, 2, 4, 5, 64, 64, torch.float32, torch.device("cpu"),
                                       [torch.Generator().manual_seed(s) for s in (1, 2)])
    with torch.no_grad():
        dist = torch.cat([pipe.vae.encode(image[i : i + 1, :, None]).latent_dist.parameters for i in range(2)])
    got = canvas_latents(dist, [torch.Generator().manual_seed(s) for s in (1, 2)], 2, pipe.vae_scaling_factor_image)
    assert got.shape == expected.shape == (2, 2, 4, 8, 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert torch.equal(got[:, 1:], torch.zeros_like(got[:, 1:]))
    with pytest.raises(ValueError, match="1 generators for a batch of 2"):
        canvas_latents(dist, [torch.Generator()], 2, 1.0)


def test_video_latents_are_scaled_vae_samples(pipe):
    frames = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        dist = pipe.vae.encode(frames).latent_dist
    expected = dist.sample(torch.Generator().manual_seed(7)) * pipe.vae.config.scaling_factor  # [1, C, F, h, w]
    got = sample_video_latents(dist.parameters, [torch.Generator().manual_seed(7)], pipe.vae.config.scaling_factor)
    torch.testing.assert_close(got, expected.permute(0, 2, 1, 3, 4), rtol=0, atol=0)


def _fake_clip(seed: int, k: int) -> EncodedClip:
    g = torch.Generator().manual_seed(seed)
    return EncodedClip(
        video_dist=torch.randn(8, 2, 8, 8, generator=g), canvas_dist=torch.randn(8, 1, 8, 8, generator=g),
        prompt_embeds=torch.randn(32, 384, generator=g), id_cond=torch.randn(k, 160, generator=g),
        id_vit_hidden=[torch.randn(k, 65, 64, generator=g) for _ in range(5)],
    )


def test_step_inputs_do_not_depend_on_the_batch_split(scheduler):
    clips = [_fake_clip(i, 2) for i in range(4)]
    index = torch.randint(-1, 2, (4, 32), generator=torch.Generator().manual_seed(0))
    empty = torch.zeros(32, 384)
    kwargs = dict(scheduler=scheduler, vae_scaling_factor=0.7, empty_prompt_embeds=empty, text_dropout=0.5, identity_dropout=0.5)
    whole = build_step_inputs(clips, index, sample_generators(3, 11, range(4)), **kwargs)
    halves = [build_step_inputs(clips[a:b], index[a:b], sample_generators(3, 11, range(a, b)), **kwargs) for a, b in ((0, 2), (2, 4))]
    for name in ("latents", "noisy", "image_latents", "prompt_embeds", "timesteps", "id_mask", "index_mask"):
        torch.testing.assert_close(torch.cat([getattr(h, name) for h in halves]), getattr(whole, name), rtol=0, atol=0)
    # dropped identities switch the whole sample off and drop its routing labels
    dropped = ~whole.id_mask.any(-1)
    assert torch.equal(whole.index_mask[dropped], torch.full_like(whole.index_mask[dropped], -1))
    # text dropout swaps in the empty prompt
    is_empty = (whole.prompt_embeds == 0).flatten(1).all(1)
    assert 0 < int(is_empty.sum()) < 4 or 0 < int(dropped.sum()) < 4  # p = 0.5 over 4 samples: some variety
    assert whole.model_input.shape == (4, 2, 8, 8, 8)
    # another micro-step draws different timesteps / noise
    other = build_step_inputs(clips, index, sample_generators(3, 12, range(4)), **kwargs)
    assert not torch.equal(other.noisy, whole.noisy)


def test_fixed_timesteps_and_mixed_identity_counts(scheduler):
    clips = [_fake_clip(0, 2), _fake_clip(1, 2)]
    kw = dict(scheduler=scheduler, vae_scaling_factor=1.0, empty_prompt_embeds=torch.zeros(32, 384))
    out = build_step_inputs(clips, torch.zeros(2, 32, dtype=torch.long), sample_generators(0, 0, range(2)),
                            timesteps=torch.tensor([5, 900]), **kw)
    assert out.timesteps.tolist() == [5, 900]
    with pytest.raises(ValueError, match=r"batch mixes identity counts \[1, 2\]"):
        build_step_inputs([_fake_clip(0, 1), _fake_clip(1, 2)], torch.zeros(2, 32, dtype=torch.long),
                          sample_generators(0, 0, range(2)), **kw)


def test_sample_seeds_are_distinct_and_stable():
    seeds = {sample_seed(0, s, i, st) for s in range(20) for i in range(8) for st in (0, 1)}
    assert len(seeds) == 20 * 8 * 2
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2) and 0 <= sample_seed(5, 5, 5) < 2**63
    with pytest.raises(ValueError, match="step must be >= 0"):
        sample_seed(0, -1, 0)


def test_routing_hits_counts_only_labelled_tokens():
    logits = [torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]]])]  # argmax 0, 1, 0, 1
    index = torch.tensor([[0, 0, -1, 1]])
    hits, labelled = routing_hits(logits + logits, index)
    assert hits.tolist() == [2, 2] and labelled == 3
    assert math.isclose(float(hits[0]) / labelled, 2 / 3)


def test_identity_shuffle_moves_references_boxes_and_labels_together():
    from ingredients.training.step import identity_permutations, permute_identities

    g = torch.Generator().manual_seed(0)
    batch = {
        "index_mask": torch.randint(-1, 3, (4, 32), generator=g),
        "reference_paths": [[f"s{i}_id{k}.png" for k in range(3)] for i in range(4)],
        "boxes": torch.arange(4 * 3 * 5 * 4, dtype=torch.float32).reshape(4, 3, 5, 4),
        "prompt": ["p"] * 4, "num_identities": 3,
    }
    perms = identity_permutations(0, 7, range(4), 3)
    assert [p.tolist() for p in perms] == [p.tolist() for p in identity_permutations(0, 7, range(4), 3)]
    assert len({tuple(p.tolist()) for p in identity_permutations(0, 7, range(64), 3)}) == 6  # all orders occur
    out = permute_identities(batch, perms)
    for i, perm in enumerate(perms):
        for j, old in enumerate(perm.tolist()):
            assert out["reference_paths"][i][j] == f"s{i}_id{old}.png"
            assert torch.equal(out["boxes"][i, j], batch["boxes"][i, old])
            assert torch.equal(out["index_mask"][i] == j, batch["index_mask"][i] == old)
        assert torch.equal(out["index_mask"][i] == -1, batch["index_mask"][i] == -1)
    assert torch.equal(batch["index_mask"], batch["index_mask"].clone())  # the input batch is not modified
    assert batch["reference_paths"][0] == ["s0_id0.png", "s0_id1.png", "s0_id2.png"]
